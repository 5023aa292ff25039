"""`faceset` sub-commands, one module each, discovered by flows/cli.py."""
