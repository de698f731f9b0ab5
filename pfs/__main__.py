"""`python -m pfs`: the pfs command, where its console script is not on PATH."""

from pfs.cli.main import main

main()
