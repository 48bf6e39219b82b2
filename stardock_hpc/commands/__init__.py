"""The `stardock` subcommands, grouped by what they work on; cli.py registers them."""
