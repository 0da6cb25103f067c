"""Subcommands of the `fusion` CLI.

Each module has `register(subparsers)` and `run(args) -> int`.
"""
