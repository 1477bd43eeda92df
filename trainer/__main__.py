"""``python -m trainer`` runs the ``trainer`` command (also under ``torchrun -m trainer``)."""

from trainer.cli import main

main()
