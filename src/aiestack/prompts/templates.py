"""Prompt templates: Jinja2 with ``StrictUndefined``, their variables, rendering and diffs.

A template that names a variable the caller did not give fails loudly (never renders an empty
string in its place). Variables are inferred from the template (every undeclared name it reads);
a push may declare more (e.g. ones only used inside a branch that inference sees anyway, or ones
documented for callers).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jinja2
import jinja2.meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from aiestack.errors import InvalidRequest
from aiestack.stores.prompts import PromptVersion

#: What a prompt name may look like (also what a label may look like).
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")


class TemplateError(InvalidRequest):
    """A template that does not parse, or a render that lacks a variable."""

    code = "prompt_template_error"


def environment() -> jinja2.Environment:
    """The Jinja2 environment of every prompt: sandboxed, strict, no autoescape (this is not HTML)."""
    return ImmutableSandboxedEnvironment(
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True, trim_blocks=True
    )


def infer_variables(template: str, *, env: jinja2.Environment | None = None) -> tuple[str, ...]:
    """The names ``template`` reads from its context, sorted. Raises :class:`TemplateError` if it does not parse."""
    env = env or environment()
    try:
        parsed = env.parse(template)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(
            f"The prompt template does not parse: {exc.message} (line {exc.lineno}).",
            hint="Fix the Jinja2 syntax: {{ variable }}, {% if ... %}...{% endif %}.",
        ) from None
    return tuple(sorted(jinja2.meta.find_undeclared_variables(parsed)))


def check_name(name: str, what: str = "prompt name") -> str:
    if not NAME_PATTERN.match(name):
        raise InvalidRequest(
            f"{name!r} is not a valid {what}.",
            hint="Use lower-case letters, digits, '.', '_' and '-', starting with a letter or digit.",
        )
    return name


class Renderer:
    """Compiles each version once (versions are immutable) and renders it with given variables."""

    def __init__(self, *, max_compiled: int = 256) -> None:
        self._env = environment()
        self._compiled: dict[tuple[str, int, str], tuple[jinja2.Template, tuple[str, ...]]] = {}
        self._max = max_compiled

    def render(self, version: PromptVersion, variables: Mapping[str, Any]) -> str:
        """The rendered text; :class:`TemplateError` naming the missing variables if any are absent."""
        template, needed = self._compile(version)
        missing = [v for v in needed if v not in variables]
        if missing:
            raise TemplateError(
                f"The prompt '{version.name}' (version {version.version}) needs the variable(s) "
                f"{', '.join(missing)}, which the request did not give.",
                hint="Send them in the request's metadata, e.g. "
                + "{"
                + ", ".join(f'"{m}": "..."' for m in missing)
                + "}.",
            )
        try:
            return template.render(**variables)
        except jinja2.UndefinedError as exc:
            raise TemplateError(
                f"The prompt '{version.name}' (version {version.version}) failed to render: {exc.message}.",
                hint="Give the variable it names in the request's metadata.",
            ) from None

    def _compile(self, version: PromptVersion) -> tuple[jinja2.Template, tuple[str, ...]]:
        key = (version.name, version.version, version.content_hash)
        found = self._compiled.get(key)
        if found is None:
            if len(self._compiled) >= self._max:
                self._compiled.pop(next(iter(self._compiled)))
            needed = infer_variables(version.template, env=self._env)
            found = self._compiled[key] = (self._env.from_string(version.template), needed)
        return found


def diff_versions(a: PromptVersion, b: PromptVersion, *, context: int = 3) -> str:
    """A unified diff from version ``a`` to version ``b`` (empty when they are the same)."""
    lines = difflib.unified_diff(
        a.template.splitlines(keepends=True),
        b.template.splitlines(keepends=True),
        fromfile=f"{a.name}@{a.version}",
        tofile=f"{b.name}@{b.version}",
        n=context,
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def merge_variables(*sources: Mapping[str, Any] | None) -> dict[str, Any]:
    """Later sources win; ``None`` sources are skipped."""
    out: dict[str, Any] = {}
    for source in sources:
        if source:
            out.update(source)
    return out


def declared(variables: Sequence[str], template: str) -> tuple[str, ...]:
    """The variables of a new version: those declared plus those the template reads, sorted, once each."""
    for name in variables:
        if not name.isidentifier():
            raise InvalidRequest(f"{name!r} is not a valid variable name.", hint="Use a Python identifier.")
    return tuple(sorted({*variables, *infer_variables(template)}))
