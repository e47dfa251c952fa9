"""``python -m aiestack`` runs the CLI."""

from aiestack.cli import main

main()
