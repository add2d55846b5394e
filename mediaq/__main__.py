"""``python -m mediaq``: the command line, as the ``mediaq`` script runs it."""

from mediaq.cli import main

main()
