"""``python -m featstore`` runs the ``featstore`` command."""

from featstore.cli import main

main()
