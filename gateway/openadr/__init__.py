"""The OpenADR 2.0b VEN adapter: talks to the utility's VTN through openleadr's message layer and hands
the rest of the gateway plain domain `Event`s. Nothing openleadr-shaped leaves this package."""
