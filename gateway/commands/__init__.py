"""Subcommands of the `gateway` CLI, one module each (see `gateway.cli`)."""
