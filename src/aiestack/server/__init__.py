"""The HTTP face: an OpenAI-compatible API plus platform routes. No business logic lives here."""

from aiestack.server.app import create_app

__all__ = ["create_app"]
