"""The PromptStore protocol: versioned prompt templates with labels, and their usage.

Every backend (SQL, memory) implements it and passes
:class:`aiestack.testing.feedback_conformance.PromptStoreConformance`. The prompts wing
(:mod:`aiestack.prompts`) adds rendering, label resolution with a short cache, and A/B splits.

- A prompt is a name (``[a-z0-9][a-z0-9_.-]*``) with versions 1, 2, 3, ... Versions are
  immutable. :meth:`PromptStore.push_prompt` numbers a new version, unless the template is the
  same as the latest version's (then it is a no-op that returns the latest).
- A label (``production``, ``staging``, ``canary``, ...) points at one version of one prompt;
  moving it is :meth:`PromptStore.set_label`. ``latest`` is not stored: it always means the
  newest version.
- Usage counts come from the exchanges: every exchange that used a prompt records
  ``aiestack.prompt.name`` and ``aiestack.prompt.version`` in its attributes
  (:data:`PROMPT_NAME_ATTR`, :data:`PROMPT_VERSION_ATTR`).

For the console (a read-only user of this module): the prompts page lists
:meth:`PromptStore.list_prompts`; a prompt's page shows :meth:`PromptStore.prompt_versions` with
:meth:`PromptStore.prompt_usage` per version and :meth:`PromptStore.prompt_labels`; a diff
between two versions is :func:`aiestack.prompts.diff_versions` (unified diff text).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

#: Exchange attributes written by the Prompt stage (and read for usage counts).
PROMPT_NAME_ATTR = "aiestack.prompt.name"
PROMPT_VERSION_ATTR = "aiestack.prompt.version"
PROMPT_LABEL_ATTR = "aiestack.prompt.label"


@dataclass(frozen=True, slots=True)
class PromptVersion:
    """One immutable version of a prompt.

    ``variables`` are the template's variables (declared at push, else inferred from the
    template); ``content_hash`` is the sha256 hex of ``template``; ``message`` says what changed.
    """

    name: str
    version: int
    template: str
    content_hash: str
    created_at: float  # epoch seconds
    variables: tuple[str, ...] = ()
    message: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PromptLabel:
    name: str
    label: str
    version: int
    updated_at: float


@dataclass(frozen=True, slots=True)
class PromptSummary:
    """One prompt in a listing: its newest version and its labels (label → version)."""

    name: str
    latest_version: int
    created_at: float  # of the first version
    updated_at: float  # of the newest version
    labels: Mapping[str, int] = field(default_factory=dict)


@runtime_checkable
class PromptStore(Protocol):
    def push_prompt(
        self,
        name: str,
        template: str,
        *,
        variables: Sequence[str] = (),
        created_at: float,
        message: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> tuple[PromptVersion, bool]:
        """Store a new version numbered one past the newest (1 for a new prompt) and return it
        with ``True``; if ``template`` equals the newest version's, store nothing and return that
        version with ``False``. Safe against concurrent pushes (a version number is never reused)."""
        ...

    def get_prompt(self, name: str, version: int | None = None) -> PromptVersion | None:
        """A version (``None``: the newest); ``None`` if the prompt or version does not exist."""
        ...

    def prompt_versions(self, name: str) -> list[PromptVersion]:
        """Every version of ``name``, oldest first (empty for an unknown prompt)."""
        ...

    def list_prompts(self) -> list[PromptSummary]:
        """Every prompt, by name."""
        ...

    def set_label(self, name: str, label: str, version: int, *, at: float) -> PromptLabel:
        """Point ``label`` of ``name`` at ``version`` (moving it if it pointed elsewhere).
        Raises ``KeyError`` if that version does not exist."""
        ...

    def prompt_labels(self, name: str) -> list[PromptLabel]:
        """The labels of ``name``, by label."""
        ...

    def resolve_label(self, name: str, label: str) -> PromptVersion | None:
        """The version ``label`` points at (``latest``: the newest), or ``None``."""
        ...

    def prompt_usage(self, name: str, *, since: float | None = None) -> dict[int, int]:
        """Exchanges per version of ``name`` (versions never used are absent), from exchange
        attributes, over exchanges created at or after ``since``. One scan of the exchanges'
        attributes (≈ 0.2 s per 100k exchanges on SQLite): pass ``since`` on hot pages."""
        ...

    def prompt_usage_all(self, *, since: float | None = None) -> dict[str, dict[int, int]]:
        """``{name: {version: exchanges}}`` for every prompt used, in one scan (for listings)."""
        ...
