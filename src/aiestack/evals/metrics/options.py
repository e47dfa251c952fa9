"""Option parsing and the reference conventions shared by every metric.

Suites configure metrics in YAML, so options arrive as plain mappings. Each metric validates them
with a small pydantic model (the config edge) and a bad option becomes a :class:`ConfigError` that
names ``metrics.<metric>.<option>`` and the fix, instead of a ``KeyError`` half way through a run.

Reference convention (one place, so every metric reads references the same way):

- ``reference_key`` unset: ``example.reference`` itself is the reference (a string, a number, or a
  list of acceptable strings).
- ``reference_key`` set: the value under that key of ``example.reference`` (when it is a mapping),
  else of ``example.metadata``, else of ``example.input``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from aiestack.errors import ConfigError
from aiestack.evals.base import Sample
from aiestack.settings import config_error

_O = TypeVar("_O", bound="MetricOptions")


class MetricOptions(BaseModel):
    """Options every metric accepts. ``name`` renames the metric (e.g. two ``regex`` metrics)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None


class ReferenceOptions(MetricOptions):
    reference_key: str | None = None


def parse_options(model: type[_O], options: Mapping[str, Any], metric: str) -> _O:
    """Validate ``options`` for ``metric``; a bad option raises a ConfigError naming it."""
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        raise config_error(exc, model, source="the suite file", prefix=f"metrics.{metric}") from None


def lookup(sample: Sample, key: str | None) -> Any:
    """The example's reference, or the value under ``key`` (reference mapping, metadata, then input)."""
    example = sample.example
    if key is None:
        return example.reference
    for source in (example.reference, example.metadata, example.input):
        if isinstance(source, Mapping) and key in source:
            return source[key]
    return None


def reference_texts(sample: Sample, key: str | None) -> tuple[str, ...]:
    """The acceptable reference strings of a sample (empty when the example has none)."""
    value = lookup(sample, key)
    if value is None:
        return ()
    if isinstance(value, str | int | float):
        return (str(value),)
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value if v is not None)
    raise ConfigError(
        "reference_key",
        f"example {sample.example.id!r} has a reference of type {type(value).__name__}, not text",
        "set the metric's 'reference_key' option to the field that holds the reference text",
    )


def require(value: object, metric: str, what: str, fix: str) -> None:
    """Raise a ConfigError when a dependency a metric needs (judge, embeddings) is missing."""
    if value is None:
        raise ConfigError(f"metrics.{metric}", f"this metric needs {what}", fix)
