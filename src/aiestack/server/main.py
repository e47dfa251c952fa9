"""The production entry point for uvicorn: ``uvicorn --factory aiestack.server.main:app_factory``."""

from __future__ import annotations

import sys

from fastapi import FastAPI
from threadpoolctl import threadpool_limits

from aiestack.build import Stack, build_stack
from aiestack.server.app import create_app
from aiestack.settings import load_settings

#: How long a thread may hold the GIL while another waits for it, in the server process.
SWITCH_INTERVAL_S = 0.001
#: Threads NumPy's BLAS may use in the server process (see :func:`app_factory`).
BLAS_THREADS = 1


def app_factory() -> FastAPI:
    """Read the settings (file + environment) and build the app around a fresh stack."""
    # The store writer and the implicit-feedback thread run Python beside the event loop. When one
    # holds the GIL as the loop wakes up, the loop waits for the switch interval (5 ms by default)
    # before it may take the GIL back: a request arriving then pays that wait. 1 ms bounds it.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    # NumPy's BLAS (OpenBLAS) splits a product over a few thousand rows across threads of its own.
    # Beside an event loop serving many requests on few cores, that is a loss: the semantic cache's
    # exact search of a 2,000-entry partition took ~1.1 ms on 2 loaded cores with its threads and
    # ~0.16 ms on the loop's thread alone. Concurrent requests are the server's parallelism.
    threadpool_limits(limits=BLAS_THREADS, user_api="blas")
    settings = load_settings()
    return create_app(lambda: _warm(build_stack(settings)), freeze_heap=True)


def _warm(stack: Stack) -> Stack:
    """Load the embedding model at start when the semantic cache will use it (not on a first request)."""
    cache = stack.settings.cache
    if cache.enabled and cache.semantic:
        _ = stack.embeddings
    return stack
