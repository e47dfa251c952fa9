"""The production entry point for uvicorn: ``uvicorn --factory aiestack.server.main:app_factory``."""

from __future__ import annotations

from fastapi import FastAPI

from aiestack.build import build_stack
from aiestack.server.app import create_app
from aiestack.settings import load_settings


def app_factory() -> FastAPI:
    """Read the settings (file + environment) and build the app around a fresh stack."""
    settings = load_settings()
    return create_app(lambda: build_stack(settings))
