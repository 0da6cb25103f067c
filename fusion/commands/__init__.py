"""Subcommands of the `fusion` CLI; each module has `register(subparsers)` and `run(args) -> int`."""
