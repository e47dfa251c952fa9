"""Route promotions edit aiestack.toml as text, keep its comments, and never write a file that means something else."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from aiestack.errors import ConfigError
from aiestack.flywheel.config_edit import set_route_table, toml_value

pytestmark = pytest.mark.unit
TABLE = {"dataset": "good@3", "k": 2, "min_similarity": 0.25}


def _edit(tmp_path: Path, text: str) -> tuple[object, str]:
    path = tmp_path / "aiestack.toml"
    path.write_text(text, encoding="utf-8")
    before = set_route_table(path, "support", "dicl", TABLE)
    return before, path.read_text(encoding="utf-8")


def test_a_new_table_goes_into_the_route_and_comments_stay(tmp_path: Path) -> None:
    before, text = _edit(tmp_path, '# top\n[routes.support] # mine\ndeployments = ["a"]\n\n[routes.other]\ndeployments = ["b"]\n')
    assert before is None and "# top" in text and "# mine" in text
    config = tomllib.loads(text)
    assert config["routes"]["support"]["dicl"] == TABLE and config["routes"]["other"] == {"deployments": ["b"]}


def test_an_existing_table_is_replaced(tmp_path: Path) -> None:
    before, text = _edit(tmp_path, '[routes.support]\ndeployments = ["a"]\n\n[routes.support.dicl]\ndataset = "good@1"\nk = 5\n\n[cache]\nexact = true\n')
    assert before == {"dataset": "good@1", "k": 5}
    config = tomllib.loads(text)
    assert config["routes"]["support"]["dicl"] == TABLE and config["cache"] == {"exact": True}


def test_an_inline_key_is_replaced(tmp_path: Path) -> None:
    before, text = _edit(tmp_path, '[routes.support]\ndicl = { dataset = "old" }\ndeployments = ["a"]\n')
    assert before == {"dataset": "old"} and tomllib.loads(text)["routes"]["support"]["dicl"] == TABLE


def test_a_layout_it_cannot_edit_safely_is_left_alone_with_the_toml_to_paste(tmp_path: Path) -> None:
    original = 'routes = { support = { deployments = ["a"] } }\n'
    path = tmp_path / "aiestack.toml"
    path.write_text(original, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        set_route_table(path, "support", "dicl", TABLE)
    assert "[routes.support.dicl]" in (info.value.hint or "") and 'dataset = "good@3"' in (info.value.hint or "")
    assert path.read_text() == original


def test_an_unknown_route_or_broken_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "aiestack.toml"
    path.write_text('[routes.other]\ndeployments = ["a"]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="declares no route 'support'"):
        set_route_table(path, "support", "dicl", TABLE)
    path.write_text("[routes", encoding="utf-8")
    with pytest.raises(ConfigError, match="invalid TOML"):
        set_route_table(path, "support", "dicl", TABLE)


def test_values_are_written_as_toml() -> None:
    assert toml_value({"a b": [1, 2.5, True, 'q"t']}) == '{ "a b" = [1, 2.5, true, "q\\"t"] }'
    assert tomllib.loads("x = " + toml_value({"n": {"m": "é"}}))["x"] == {"n": {"m": "é"}}
