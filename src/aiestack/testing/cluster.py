"""Gateway processes on the loopback interface, for multi-process tests, failure drills and soak runs.

:class:`ServerProcess` runs one command (``aiestack serve``, the fake upstream, a Redis server) in
a session of its own, waits until it answers, and stops it — gently (SIGTERM) at the end, or with
SIGKILL when a test wants a crash. Everything listens on 127.0.0.1 only. :func:`gateway_command`
and :func:`upstream_command` are the two commands the tests and ``bench/soak.py`` start.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from aiestack.testing.net import free_port

HOST = "127.0.0.1"


class ServerProcess:
    """One server process started with :meth:`start` and stopped with :meth:`stop` or :meth:`kill`.

    ``ready_path`` is polled over HTTP (``http://127.0.0.1:PORT{ready_path}``) until it answers
    below 500; None waits for nothing. Output goes to ``log`` (read it when a test fails).
    """

    def __init__(
        self,
        name: str,
        command: list[str],
        *,
        port: int,
        log: Path,
        env: Mapping[str, str] | None = None,
        ready_path: str | None = "/health",
    ) -> None:
        self.name = name
        self.command = command
        self.port = port
        self.log = log
        self.env = dict(env if env is not None else os.environ)
        self.ready_path = ready_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError(f"{self.name} is not running")
        return self._proc.pid

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 60.0) -> ServerProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self._proc = subprocess.Popen(
                self.command, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        if self.ready_path is not None:
            self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited while starting; its log:\n{self.tail()}")
            with contextlib.suppress(OSError), urllib.request.urlopen(self.url + str(self.ready_path), timeout=2) as r:
                if r.status < 500:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer within {timeout_s:.0f} s; its log:\n{self.tail()}")

    def tail(self, chars: int = 4000) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-chars:]
        return ""

    def kill(self) -> None:
        """SIGKILL the process and everything it started (a crash, not a shutdown)."""
        self._signal(signal.SIGKILL)
        self._reap(10)

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``. Idempotent."""
        self._signal(signal.SIGTERM)
        if not self._reap(timeout_s):
            self._signal(signal.SIGKILL)
            self._reap(10)

    def _signal(self, sig: int) -> None:
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, sig)

    def _reap(self, timeout_s: float) -> bool:
        if self._proc is None:
            return True
        try:
            self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return True

    def __enter__(self) -> ServerProcess:
        return self.start() if self._proc is None else self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def clean_env(**extra: str) -> dict[str, str]:
    """The current environment without any ``AIESTACK_``/``OPENAI_`` variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIESTACK_", "OPENAI_"))}
    return env | extra


def upstream_command(port: int) -> list[str]:
    """The fake OpenAI-compatible upstream (:mod:`aiestack.testing.upstream`) on ``port``."""
    return [sys.executable, "-m", "aiestack.testing.upstream", "--port", str(port)]


def gateway_command(port: int, *, workers: int = 1) -> list[str]:
    """``aiestack serve`` on 127.0.0.1:``port`` with ``workers`` processes."""
    return [
        sys.executable, "-m", "aiestack", "serve", "--host", HOST, "--port", str(port),
        "--workers", str(workers), "--log-level", "warning",
    ]


__all__ = ["HOST", "ServerProcess", "clean_env", "free_port", "gateway_command", "upstream_command"]
