"""The Dockerfile and deploy/compose.yaml, checked by parsing them and by running what they run.

No Docker daemon is available here, so the files are read as data (a compose file is YAML; a
Dockerfile is instructions, one per logical line) and then the compose file's ``aiestack`` service
is started as it would start in its containers — its command, its environment, its mounted
configuration, ``deploy.replicas`` of it — with the service names it reaches (``postgres``,
``redis``, the model engine) pointed at this machine's PostgreSQL and Redis and the fake upstream
on 127.0.0.1, and with its healthcheck run against each replica.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from aiestack.testing.cluster import ServerProcess, free_port

from ._kit import ADMIN, ADMIN_KEY

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"

pytestmark = [pytest.mark.integration]


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """``[(INSTRUCTION, arguments)]`` with continuation lines joined and comments dropped."""
    logical, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        logical.append(current.strip())
        current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in logical]


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's ``${NAME}``, ``${NAME:-default}`` and ``${NAME:?error}`` substitution."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3) or ""
        if env.get(name):
            return env[name]
        if op == ":?":
            raise ValueError(f"{name}: {arg}")
        return arg if op == ":-" else ""

    return re.sub(r"\$\{(\w+)(?:(:[?-])([^}]*))?\}", one, value)


@pytest.mark.unit
def test_the_dockerfile_builds_from_files_that_exist_and_serves_on_8000_with_a_healthcheck() -> None:
    steps = dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8"))
    kinds = [kind for kind, _ in steps]
    assert kinds[0] == "FROM" and "python:3.11" in steps[0][1]
    for kind, args in steps:
        if kind == "COPY":
            *sources, _ = args.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    assert ("EXPOSE", "8000") in steps
    assert "HEALTHCHECK" in kinds and "/ready" in dict(steps)["HEALTHCHECK"]
    assert any(kind == "USER" and args != "root" for kind, args in steps)  # never runs as root
    cmd = yaml.safe_load(dict(steps)["CMD"])  # the exec form is a JSON (so YAML) list
    assert cmd[:2] == ["aiestack", "serve"] and cmd[cmd.index("--port") + 1] == "8000"
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert compose["services"]["aiestack"]["command"] == cmd  # compose runs what the image runs


@pytest.mark.unit
def test_the_compose_file_wires_aiestack_replicas_to_pgvector_and_redis() -> None:
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    services = compose["services"]
    assert set(services) == {"aiestack", "postgres", "redis"}
    app = services["aiestack"]
    assert app["deploy"]["replicas"] >= 3
    assert "pgvector" in services["postgres"]["image"] and services["redis"]["image"].startswith("redis:")
    assert {name: dep["condition"] for name, dep in app["depends_on"].items()} == {
        "postgres": "service_healthy", "redis": "service_healthy"
    }
    env = app["environment"]
    assert "@postgres:5432/" in env["AIESTACK_STORE__URL"]
    assert env["AIESTACK_GATEWAY__REDIS_URL"].startswith("redis://redis:6379")
    with pytest.raises(ValueError, match="AIESTACK_ADMIN_KEY"):  # refuses to start without an admin key
        interpolate(env["AIESTACK_ADMIN_KEY"], {})
    for name in ("postgres", "redis"):
        assert services[name]["healthcheck"]["test"]
    mounts = [v.split(":")[0] for v in app["volumes"]]
    assert all((COMPOSE.parent / m).exists() for m in mounts if m.startswith("."))


@pytest.mark.slow
def test_the_compose_aiestack_service_runs_as_replicas_here(
    tmp_path: Path, upstream: ServerProcess, pg_url: str, redis_url: str, redis_prefix: str
) -> None:
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    app: dict[str, Any] = compose["services"]["aiestack"]
    # The mounted configuration, with the engine's service name pointed at the fake upstream.
    (mount,) = [v for v in app["volumes"] if v.endswith(":ro")]
    source, target = mount.split(":")[:2]
    config_text = (COMPOSE.parent / source).read_text(encoding="utf-8")
    config_text = re.sub(r'base_url = "http://llm:\d+/v1"', f'base_url = "{upstream.url}/v1"', config_text)
    config = tmp_path / "aiestack.toml"
    config.write_text(config_text, encoding="utf-8")

    services = {"postgres": pg_url, "redis": redis_url}
    replicas = []
    try:
        for i in range(app["deploy"]["replicas"]):
            port = free_port()
            env = {k: interpolate(str(v), {"AIESTACK_ADMIN_KEY": ADMIN_KEY}) for k, v in app["environment"].items()}
            assert env["AIESTACK_CONFIG"] == target
            env["AIESTACK_CONFIG"] = str(config)
            env["AIESTACK_DATA_DIR"] = str(tmp_path / f"data-{i}")
            env["AIESTACK_STORE__URL"] = services["postgres"]
            env["AIESTACK_GATEWAY__REDIS_URL"] = services["redis"]
            env["AIESTACK_GATEWAY__REDIS_PREFIX"] = redis_prefix + "compose:"
            command = [sys.executable, "-m", *app["command"]]
            command[command.index("--host") + 1] = "127.0.0.1"  # loopback only, here
            command[command.index("--port") + 1] = str(port)
            replica = ServerProcess(f"replica-{i}", command, port=port, log=tmp_path / f"replica-{i}.log",
                                    env={**_base_env(), **env}, ready_path=None)
            replicas.append(replica.start())
        for replica in replicas:
            replica.ready_path = "/ready"
            replica.wait_ready(90)
            health = [c.replace("127.0.0.1:8000", f"127.0.0.1:{replica.port}") for c in app["healthcheck"]["test"][1:]]
            health[0] = sys.executable if health[0] == "python" else health[0]
            assert subprocess.run(health, timeout=30).returncode == 0, f"healthcheck failed: {shlex.join(health)}"

        created = httpx.post(f"{replicas[0].url}/admin/keys", json={"tenant": "compose"}, headers=ADMIN, timeout=30)
        assert created.status_code == 201, created.text
        key = created.json()["key"]
        body = {"model": "chat", "messages": [{"role": "user", "content": "hello compose"}], "temperature": 0}
        answers = [
            httpx.post(f"{r.url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"},
                       timeout=30)
            for r in replicas
        ]
        assert [a.status_code for a in answers] == [200] * len(replicas)
        assert answers[0].json()["choices"][0]["message"]["content"] == "llama3.2 answers: hello compose"
        assert [a.headers["x-aiestack-cache"] for a in answers] == ["miss"] + ["hit"] * (len(replicas) - 1)
    finally:
        for replica in replicas:
            replica.stop()


def _base_env() -> dict[str, str]:
    from aiestack.testing.cluster import clean_env

    return clean_env(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
