"""Open mode warns at start and refuses a non-loopback address; forwarding headers only from trusted proxies."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from aiestack.cli import build_app
from aiestack.server.exposure import check_exposure, is_loopback, uvicorn_proxy_options
from aiestack.settings import GatewaySettings, Settings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("example.com", False)],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_open_mode_warns_on_loopback_and_refuses_elsewhere() -> None:
    settings = Settings(embedded_model=False)
    local = check_exposure(settings, "127.0.0.1", has_keys=False, allow_open=False)
    assert local.warning is not None and "Open mode" in local.warning and not local.refuse
    public = check_exposure(settings, "0.0.0.0", has_keys=False, allow_open=False)
    assert public.refuse and public.warning is not None and "0.0.0.0" in public.warning
    assert not check_exposure(settings, "0.0.0.0", has_keys=False, allow_open=True).refuse
    keyed = check_exposure(settings, "0.0.0.0", has_keys=True, allow_open=False)
    assert keyed.warning is None and not keyed.refuse
    off = Settings(embedded_model=False, gateway=GatewaySettings(auth="off"))
    assert check_exposure(off, "0.0.0.0", has_keys=True, allow_open=False).refuse
    required = Settings(embedded_model=False, gateway=GatewaySettings(auth="required"))
    assert check_exposure(required, "0.0.0.0", has_keys=False, allow_open=False).warning is None


def test_serve_refuses_open_mode_on_all_interfaces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AIESTACK_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(build_app(), ["serve", "--host", "0.0.0.0", "--port", "1"])
    assert result.exit_code == 2, result.output
    assert "Refusing to serve without keys" in result.output and "--allow-open" in result.output


def test_forwarding_headers_are_trusted_only_from_configured_proxies() -> None:
    assert uvicorn_proxy_options(Settings(embedded_model=False)) == {"proxy_headers": False}
    settings = Settings(embedded_model=False, gateway=GatewaySettings(trusted_proxies=["10.0.0.2", "10.1.0.0/16"]))
    assert uvicorn_proxy_options(settings) == {"proxy_headers": True, "forwarded_allow_ips": "10.0.0.2,10.1.0.0/16"}


def test_rotating_x_forwarded_for_does_not_dodge_the_login_lockout(tmp_path: Path) -> None:
    """The issue's bypass: on a loopback connection uvicorn believed X-Forwarded-For by default."""
    import threading
    import time

    import httpx
    import uvicorn

    from .conftest import make_app, stack_of

    app = make_app(tmp_path)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                            **uvicorn_proxy_options(Settings(embedded_model=False)))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        stack_of(app).settings.gateway.auth_failure_limit = 5
        codes = []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            for i in range(8):
                r = client.post("/login", data={"key": f"guess-{i}", "next": "/"},
                                headers={"x-forwarded-for": f"203.0.113.{i}", "origin": f"http://127.0.0.1:{port}"})
                codes.append(r.status_code)
        assert codes == [401] * 5 + [429] * 3
    finally:
        server.should_exit = True
        thread.join(timeout=30)


async def test_the_failed_authentication_count_follows_limits_fail_open() -> None:
    from aiestack.errors import StoreError
    from aiestack.gateway.keys import FailedAuthentications

    class DownKV:
        async def get(self, key: str) -> int | None:
            raise StoreError("Redis is away")

        async def window_add(self, *args: object) -> None:
            raise StoreError("Redis is away")

    open_ = FailedAuthentications(DownKV(), fail_open=True)  # type: ignore[arg-type]
    await open_.check("10.0.0.1")
    await open_.failed("10.0.0.1")
    closed = FailedAuthentications(DownKV())  # type: ignore[arg-type]
    with pytest.raises(StoreError):
        await closed.check("10.0.0.1")
