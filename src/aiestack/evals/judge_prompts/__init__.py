"""Versioned judge prompt templates: ``<name>@<version>.txt`` files in this folder.

A judge's verdict is only comparable with verdicts made with the same prompt, so every prompt has
a version in its file name, a judge names the prompt it uses (``pointwise`` means the latest
version, ``pointwise@1`` pins one), and each score records ``name@version`` in its detail. Change
a prompt by adding a new version, never by editing an old one.

File format: the system prompt, a line ``---``, then the user prompt. ``$name`` placeholders are
filled with :class:`string.Template` (``$$`` is a literal dollar); a missing variable is an error,
not an empty string. A path to a ``.txt`` file of the same format also works as a prompt name, for
prompts kept with a suite.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from aiestack.errors import ConfigError

_FILE = re.compile(r"^(?P<name>[\w-]+)@(?P<version>\d+)\.txt$")
_SEPARATOR = re.compile(r"^---\s*$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class JudgePrompt:
    name: str
    version: int
    system: str
    user: str

    @property
    def ref(self) -> str:
        """``name@version``, as recorded with every score made with this prompt."""
        return f"{self.name}@{self.version}"

    def render(self, variables: Mapping[str, object]) -> tuple[str, str]:
        """The (system, user) messages with the variables filled in."""
        values = {k: str(v) for k, v in variables.items()}
        try:
            return string.Template(self.system).substitute(values), string.Template(self.user).substitute(
                values
            )
        except KeyError as exc:
            raise ConfigError(
                f"judge prompt {self.ref}",
                f"the template uses ${exc.args[0]}, which this judge does not provide",
                f"use only the variables {', '.join(sorted(values))} in the template",
            ) from None


def _parse(name: str, version: int, text: str) -> JudgePrompt:
    parts = _SEPARATOR.split(text, maxsplit=1)
    if len(parts) != 2:
        raise ConfigError(
            f"judge prompt {name}@{version}",
            "the file has no '---' line between the system and the user prompt",
            "write the system prompt, a line '---', then the user prompt",
        )
    return JudgePrompt(name, version, parts[0].strip(), parts[1].strip())


def builtin_prompts() -> dict[str, list[int]]:
    """Each built-in prompt name with its versions, ascending."""
    found: dict[str, list[int]] = {}
    for entry in resources.files(__name__).iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.setdefault(match["name"], []).append(int(match["version"]))
    return {name: sorted(versions) for name, versions in sorted(found.items())}


def load_prompt(ref: str) -> JudgePrompt:
    """``name`` (latest), ``name@N``, or a path to a ``.txt`` template file."""
    if ref.endswith(".txt") and ("/" in ref or Path(ref).exists()):
        path = Path(ref)
        if not path.is_file():
            raise ConfigError(
                "judge prompt", f"the file {ref} does not exist", "give the path to a .txt template"
            )
        match = _FILE.match(path.name)
        version = int(match["version"]) if match else 1
        return _parse(match["name"] if match else path.stem, version, path.read_text(encoding="utf-8"))
    name, _, pinned = ref.partition("@")
    versions = builtin_prompts().get(name)
    if not versions or (pinned and (not pinned.isdigit() or int(pinned) not in versions)):
        known = ", ".join(f"{n}@{v}" for n, vs in builtin_prompts().items() for v in vs)
        raise ConfigError(
            "judge prompt", f"no built-in prompt {ref!r}", f"use one of {known}, or a path to a .txt file"
        )
    version = int(pinned) if pinned else versions[-1]
    text = resources.files(__name__).joinpath(f"{name}@{version}.txt").read_text(encoding="utf-8")
    return _parse(name, version, text)
