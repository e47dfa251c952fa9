"""The production entry point for uvicorn: ``uvicorn --factory aiestack.server.main:app_factory``."""

from __future__ import annotations

from fastapi import FastAPI

from aiestack.build import Stack, build_stack
from aiestack.server.app import create_app
from aiestack.settings import load_settings


def app_factory() -> FastAPI:
    """Read the settings (file + environment) and build the app around a fresh stack."""
    settings = load_settings()
    return create_app(lambda: _warm(build_stack(settings)))


def _warm(stack: Stack) -> Stack:
    """Load the embedding model at start when the semantic cache will use it (not on a first request)."""
    cache = stack.settings.cache
    if cache.enabled and cache.semantic:
        _ = stack.embeddings
    return stack
