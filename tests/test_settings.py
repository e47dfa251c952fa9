"""Settings: TOML + AIESTACK_* environment, and errors that name the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiestack.errors import ConfigError
from aiestack.settings import load_settings

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for key in list(__import__("os").environ):
        if key.startswith("AIESTACK_"):
            monkeypatch.delenv(key)


def test_defaults_need_no_file(tmp_path: Path) -> None:
    s = load_settings()
    assert s.default_model == "gemma-3-270m"
    assert s.tracing.content is False
    assert s.store_url.startswith("sqlite:///") and s.store_url.endswith("aiestack.db")


def test_toml_file_in_cwd_is_read(tmp_path: Path) -> None:
    (tmp_path / "aiestack.toml").write_text(
        'default_model = "local"\n[tracing]\ncontent = true\n[models.local]\nprovider = "openai"\nbase_url = "http://127.0.0.1:8000/v1"\n'
    )
    s = load_settings()
    assert s.default_model == "local" and s.tracing.content is True
    assert s.models["local"]["base_url"] == "http://127.0.0.1:8000/v1"


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "aiestack.toml").write_text("[tracing]\ncontent = true\n")
    monkeypatch.setenv("AIESTACK_TRACING__CONTENT", "false")
    monkeypatch.setenv("AIESTACK_DATA_DIR", str(tmp_path / "d"))
    s = load_settings()
    assert s.tracing.content is False and s.data_dir == tmp_path / "d"


def test_explicit_config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "elsewhere.toml"
    cfg.write_text('default_model = "x"\n')
    monkeypatch.setenv("AIESTACK_CONFIG", str(cfg))
    assert load_settings().default_model == "x"
    monkeypatch.setenv("AIESTACK_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()


def test_wrong_type_names_key_and_fix(tmp_path: Path) -> None:
    (tmp_path / "aiestack.toml").write_text('[tracing]\ncontent = "sometimes"\n')
    with pytest.raises(ConfigError) as info:
        load_settings()
    msg = str(info.value)
    assert "tracing.content" in msg and "Fix:" in msg and "AIESTACK_TRACING__CONTENT" in msg
    assert info.value.key == "tracing.content"


def test_unknown_key_suggests_the_close_one(tmp_path: Path) -> None:
    (tmp_path / "aiestack.toml").write_text("[tracing]\ncontnet = true\n")
    with pytest.raises(ConfigError, match="did you mean 'content'"):
        load_settings()


def test_model_without_provider_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "aiestack.toml").write_text('[models.x]\nbase_url = "http://h"\n')
    with pytest.raises(ConfigError, match="needs a provider"):
        load_settings()


def test_toml_syntax_error_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "aiestack.toml").write_text("[tracing\ncontent = true\n")
    with pytest.raises(ConfigError, match="TOML"):
        load_settings()


def test_configuration_reference_is_current() -> None:
    """docs/configuration.md is generated from the models; regenerate it when a setting changes."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, str(root / "scripts" / "gen_config_docs.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
