"""``python -m fairytale`` runs the command line."""

from fairytale.cli import main

main()
