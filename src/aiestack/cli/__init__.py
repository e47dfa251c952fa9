"""The ``aiestack`` command. A face: it parses, calls :mod:`aiestack.build`, and renders."""

from aiestack.cli.app import build_app, main

__all__ = ["build_app", "main"]
