"""OpenADR 2.0b VEN gateway for EV charging sites."""

__version__ = "0.1.0"
