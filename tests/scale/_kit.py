"""Helpers of the scale-out tests: one shared configuration, gateway processes, keys."""

from __future__ import annotations

from pathlib import Path

import httpx

from aiestack.testing.cluster import ServerProcess, clean_env, free_port, gateway_command

ADMIN_KEY_ENV = "AIESTACK_TEST_ADMIN_KEY"
ADMIN_KEY = "scale-admin-secret"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def write_config(
    directory: Path,
    *,
    upstream: ServerProcess,
    store_url: str,
    redis_url: str,
    redis_prefix: str,
    extra: str = "",
    gateway_extra: str = "",
    name: str = "aiestack.toml",
) -> Path:
    """The ``aiestack.toml`` every gateway process of a test shares (keys required, Redis limits and caches)."""
    base = f"{upstream.url}/v1"
    config = directory / name
    config.write_text(
        f"""default_model = "mock"
embedded_model = false

[store]
url = "{store_url}"
flush_interval_s = 0.05

[gateway]
auth = "required"
admin_key_env = "{ADMIN_KEY_ENV}"
redis_url = "{redis_url}"
redis_prefix = "{redis_prefix}"
key_cache_ttl_s = 0.2
{gateway_extra}

[cache]
backend = "redis"
sync_interval_s = 0.2

[embeddings]
provider = "openai"
model = "fake-embed"
base_url = "{base}"

[prompts]
label_cache_s = 0.2

[router]
model = "auto"
default_route = "mock"

[models.mock]
provider = "openai"
model = "up-general"
base_url = "{base}"
api_key_env = ""

[models.billing-model]
provider = "openai"
model = "up-billing"
base_url = "{base}"
api_key_env = ""

[routes.billing]
deployments = ["billing-model"]
examples = ["why was I charged twice on my invoice", "I need a refund for my invoice"]
threshold = 0.5
{extra}
""",
        encoding="utf-8",
    )
    return config


def gateway_env(config: Path, data_dir: Path) -> dict[str, str]:
    return clean_env(
        AIESTACK_CONFIG=str(config),
        AIESTACK_DATA_DIR=str(data_dir),
        **{ADMIN_KEY_ENV: ADMIN_KEY},
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )


def start_gateways(
    directory: Path, config: Path | list[Path], count: int, *, workers: int = 1
) -> list[ServerProcess]:
    """``count`` gateway processes (as if on ``count`` hosts), started in parallel, all ready.

    ``config`` is one file for all, or one per process."""
    configs = config if isinstance(config, list) else [config] * count
    gateways = []
    for i in range(count):
        port = free_port()
        gateways.append(
            ServerProcess(f"gateway-{i}", gateway_command(port, workers=workers), port=port,
                          log=directory / f"gateway-{i}.log", env=gateway_env(configs[i], directory / f"data-{i}"),
                          ready_path=None)
        )
    try:
        for gateway in gateways:
            gateway.start()
        for gateway in gateways:
            gateway.ready_path = "/ready"
            gateway.wait_ready(90)
    except BaseException:
        for gateway in gateways:
            gateway.stop()
        raise
    return gateways


def create_key(gateway: ServerProcess, **fields: object) -> str:
    response = httpx.post(f"{gateway.url}/admin/keys", json={"tenant": "scale", **fields}, headers=ADMIN, timeout=30)
    assert response.status_code == 201, response.text
    secret: str = response.json()["key"]
    return secret
