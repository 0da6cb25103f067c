"""The `sramsim` command line: `main` is the entry point; each other module is one subcommand with
`register(subparsers)` and `run(args) -> int`."""
