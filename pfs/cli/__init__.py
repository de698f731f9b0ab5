"""pfs.cli: the `pfs` command: argument parsing, output and exit codes."""
