"""The prompt registry: push versions, move labels, resolve references (cached ≤ a second).

A *reference* names one version of one prompt: ``name`` (its ``production`` label),
``name@label`` (``production``, ``staging``, ``latest``, ...) or ``name@3`` (version 3).
A route's *prompt spec* is one reference, or an A/B split of several with weights::

    prompt = "support@production"
    prompt = "support@production:90, support@canary:10"

A split is deterministic per conversation: the same user (or key, or first user message) always
gets the same arm, so a conversation never changes prompt half-way (see :func:`choose`).

Label lookups are cached for ``ttl_s`` (default 1 s), so moving a label reaches every server
within a second, without a restart, at the cost of one indexed read per label per second.
Versions are immutable and cached without expiry.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiestack.errors import ConfigError, InvalidRequest, NotFound
from aiestack.prompts.templates import check_name, declared
from aiestack.stores.prompts import PromptLabel, PromptStore, PromptVersion

DEFAULT_LABEL = "production"


@dataclass(frozen=True, slots=True)
class PromptRef:
    """``name@label`` or ``name@version`` (exactly one of ``label``/``version`` is set)."""

    name: str
    label: str | None = None
    version: int | None = None

    def __str__(self) -> str:
        return f"{self.name}@{self.version if self.version is not None else self.label}"


def parse_ref(text: str, *, default_label: str = DEFAULT_LABEL) -> PromptRef:
    """``name``, ``name@label`` or ``name@N``; raises :class:`InvalidRequest` when malformed."""
    name, _, ref = text.strip().partition("@")
    check_name(name)
    ref = ref.strip() or default_label
    if ref.isdigit():
        if int(ref) < 1:
            raise InvalidRequest(f"{text!r}: versions start at 1.", hint="Name an existing version, e.g. name@1.")
        return PromptRef(name, version=int(ref))
    return PromptRef(name, label=check_name(ref, "label"))


@dataclass(frozen=True, slots=True)
class PromptSpec:
    """A route's prompt: references with weights (one reference: weight 1)."""

    arms: tuple[tuple[PromptRef, float], ...]

    def __str__(self) -> str:
        if len(self.arms) == 1:
            return str(self.arms[0][0])
        return ", ".join(f"{ref}:{weight:g}" for ref, weight in self.arms)


def parse_spec(text: str, *, key: str = "prompt") -> PromptSpec:
    """Parse a route's ``prompt`` value; raises :class:`ConfigError` naming ``key``."""
    arms: list[tuple[PromptRef, float]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        ref_text, sep, weight_text = part.rpartition(":") if ":" in part else (part, "", "")
        try:
            ref = parse_ref(ref_text)
            weight = float(weight_text) if sep else 1.0
        except (InvalidRequest, ValueError) as exc:
            raise ConfigError(
                key,
                f"{part!r} is not a prompt reference ({exc})",
                "write 'name@label' or 'name@version', or an A/B split like 'support@production:90, support@canary:10'",
            ) from None
        if weight <= 0:
            raise ConfigError(key, f"the weight of {part!r} must be above 0", "give every arm a positive weight")
        arms.append((ref, weight))
    if not arms:
        raise ConfigError(key, "the prompt is empty", "name a prompt, e.g. 'support@production'")
    if len({str(ref) for ref, _ in arms}) != len(arms):
        raise ConfigError(key, f"{text!r} names a reference twice", "list each reference once")
    return PromptSpec(tuple(arms))


def choose(spec: PromptSpec, bucket: str) -> PromptRef:
    """The arm of ``spec`` for ``bucket`` (a stable string: user, key, or conversation root).

    The bucket's hash, salted with the spec, is a point in [0, 1); arms own consecutive slices in
    proportion to their weights. The same bucket always lands in the same arm, and buckets spread
    over the arms by weight.
    """
    if len(spec.arms) == 1:
        return spec.arms[0][0]
    digest = hashlib.sha256(f"{spec}\x00{bucket}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64
    total = sum(weight for _, weight in spec.arms)
    for ref, weight in spec.arms:
        point -= weight / total
        if point < 0:
            return ref
    return spec.arms[-1][0]


class PromptRegistry:
    """Versions and labels over a :class:`PromptStore`, with short-lived caching of label lookups."""

    def __init__(
        self, store: PromptStore, *, ttl_s: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._store = store
        self._ttl = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._labels: dict[tuple[str, str], tuple[float, PromptVersion | None]] = {}
        self._versions: dict[tuple[str, int], PromptVersion] = {}

    @property
    def store(self) -> PromptStore:
        return self._store

    # ------------------------------------------------------------------ writing

    def push(
        self,
        name: str,
        template: str,
        *,
        variables: Sequence[str] = (),
        message: str | None = None,
        label: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> tuple[PromptVersion, bool]:
        """Store ``template`` as the next version of ``name`` (no-op if it equals the newest);
        point ``label`` at the result when given. Returns the version and whether it is new."""
        check_name(name)
        version, created = self._store.push_prompt(
            name,
            template,
            variables=declared(variables, template),
            created_at=time.time(),
            message=message,
            metadata=metadata,
        )
        if label is not None:
            self.set_label(name, label, version.version)
        return version, created

    def push_dir(
        self, directory: Path, *, label: str | None = None, message: str | None = None
    ) -> list[tuple[PromptVersion, bool]]:
        """Push every ``NAME.j2`` in ``directory`` as prompt ``NAME`` (sorted; unchanged ones stay as they are)."""
        files = sorted(directory.glob("*.j2")) if directory.is_dir() else []
        if not files:
            raise InvalidRequest(
                f"{directory} holds no prompt templates.",
                hint="Put each prompt in a file NAME.j2 (e.g. examples/companion/prompts/).",
            )
        return [
            self.push(f.stem, f.read_text(encoding="utf-8"), message=message, label=label) for f in files
        ]

    def set_label(self, name: str, label: str, version: int) -> PromptLabel:
        """Move ``label`` of ``name`` to ``version``; :class:`NotFound` if that version does not exist."""
        check_name(label, "label")
        if label == "latest":
            raise InvalidRequest("'latest' always means the newest version; it cannot be moved.", hint="Pick another label.")
        try:
            moved = self._store.set_label(name, label, version, at=time.time())
        except KeyError:
            raise self.missing(PromptRef(name, version=version)) from None
        with self._lock:
            self._labels.pop((name, label), None)
        return moved

    # ------------------------------------------------------------------ reading

    def get(self, ref: PromptRef | str) -> PromptVersion:
        """The version ``ref`` names now; :class:`NotFound` saying how to fix it if none."""
        if isinstance(ref, str):
            ref = parse_ref(ref)
        found = self.cached(ref)
        if found is None:
            found = self.load(ref)
        if found is None:
            raise self.missing(ref)
        return found

    def cached(self, ref: PromptRef) -> PromptVersion | None:
        """The version if it is in the cache and fresh (no store access), else ``None``."""
        with self._lock:
            if ref.version is not None:
                return self._versions.get((ref.name, ref.version))
            assert ref.label is not None
            entry = self._labels.get((ref.name, ref.label))
        if entry is not None and entry[0] > self._clock():
            return entry[1]
        return None

    def load(self, ref: PromptRef) -> PromptVersion | None:
        """Read ``ref`` from the store and cache it (a missing label is cached too, as missing)."""
        if ref.version is not None:
            found = self._store.get_prompt(ref.name, ref.version)
            if found is not None:
                with self._lock:
                    if len(self._versions) > 1024:
                        self._versions.clear()
                    self._versions[ref.name, ref.version] = found
            return found
        assert ref.label is not None
        found = self._store.resolve_label(ref.name, ref.label)
        with self._lock:
            self._labels[ref.name, ref.label] = (self._clock() + self._ttl, found)
        return found

    def missing(self, ref: PromptRef) -> NotFound:
        """The error for a reference that names nothing, saying which command fixes it."""
        known = self._store.get_prompt(ref.name)
        if known is None:
            return NotFound(
                f"There is no prompt named '{ref.name}'.",
                hint=f"Push one: aiestack prompts push {ref.name} FILE --label {ref.label or DEFAULT_LABEL}",
            )
        if ref.version is not None:
            return NotFound(
                f"The prompt '{ref.name}' has no version {ref.version} (its newest is {known.version}).",
                hint=f"List its versions: aiestack prompts show {ref.name}",
            )
        return NotFound(
            f"The prompt '{ref.name}' has no label '{ref.label}'.",
            hint=f"Point it at a version: aiestack prompts label {ref.name} {known.version} {ref.label}",
        )
