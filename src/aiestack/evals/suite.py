"""Evaluation suites: one YAML file names a dataset, the systems under test, metrics and gates.

The file is validated into a :class:`Suite` (pydantic belongs at this edge); a mistake is a
:class:`~aiestack.errors.ConfigError` that names the key (``systems.1.params.temperature``) and
the fix, before any model is called. Paths inside the file are relative to the file, so a suite
and its data can move together. The shape is documented in ``docs/evals.md``.
"""

from __future__ import annotations

import difflib
import itertools
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from aiestack.errors import ConfigError
from aiestack.evals.judge_prompts import load_prompt
from aiestack.types import Params, ResponseFormat

DEFAULT_PROMPT = "{{ input }}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Unpivot(_Strict):
    """Turn each row into one example per listed column (HaluEval: a right and a hallucinated answer).

    ``columns`` maps a column to the label its examples get; the column's value goes into the
    field ``into`` and the label into ``label``. Example ids become ``ROWID:COLUMN``.
    """

    columns: dict[str, str] = Field(min_length=1)
    into: str = "answer"
    label: str = "label"


class DatasetSpec(_Strict):
    """Where the examples come from and which fields play which part."""

    path: Path
    format: Literal["auto", "jsonl", "csv", "tsv", "json"] = "auto"
    limit: int | None = Field(default=None, ge=1, description="Keep the first N examples (after offset).")
    offset: int = Field(default=0, ge=0)
    id: str | None = Field(
        default=None, description="Field holding a stable example id; default: the row number."
    )
    input: str = Field(default="input", description="Field rendered as {{ input }} (dotted paths allowed).")
    reference: str | None = Field(default=None, description="Field holding the reference answer(s).")
    reference_split: str | None = Field(
        default=None, description="Split a text reference into several, e.g. '; '."
    )
    metadata: list[str] = Field(
        default_factory=list, description="Fields copied into the example's metadata."
    )
    tools: str | None = Field(
        default=None, description="Field holding the tools offered to the model (OpenAI tools or BFCL function documents)."
    )
    unpivot: Unpivot | None = None


class SystemSpec(_Strict):
    """One system under test: a model or route name, its parameters and (optionally) its own prompt."""

    name: str = Field(min_length=1)
    model: str = Field(default="", description="A model or route; empty: the default model.")
    params: dict[str, Any] = Field(default_factory=dict)
    prompt: str | None = None
    system_prompt: str | None = None
    prompt_ref: str | None = Field(
        default=None,
        description="A prompt of the registry, NAME@LABEL or NAME@VERSION: its template is the system message.",
    )
    agent: str | dict[str, Any] | None = Field(
        default=None,
        description="Run an agent on each example: an [agents.NAME] of aiestack.toml, or such a table inline "
        "(aiestack.evals.agent_systems); model and params then override the agent's.",
    )

    @model_validator(mode="after")
    def _one_system_prompt(self) -> SystemSpec:
        if self.prompt_ref is not None and self.system_prompt is not None:
            raise ValueError("give a system either prompt_ref or system_prompt, not both")
        return self

    def to_params(self) -> Params:
        """The validated :class:`~aiestack.types.Params` (unknown keys were rejected on load)."""
        values = dict(self.params)
        if "stop" in values:
            stop = values["stop"]
            values["stop"] = (stop,) if isinstance(stop, str) else tuple(stop)
        if "response_format" in values:
            values["response_format"] = ResponseFormat(**values["response_format"])
        return Params(**values)


class MetricSpec(BaseModel):
    """A metric by name; every other key is an option passed to the metric (validated by it)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = Field(min_length=1)

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class GateSpec(_Strict):
    """A condition on a metric's mean that a CI run must meet.

    ``min``/``max`` bound the mean of the run itself; ``max_drop`` bounds the regression against a
    baseline run (see :mod:`aiestack.evals.gates` for the rule). ``system`` limits it to one system.
    """

    metric: str
    min: float | None = None
    max: float | None = None
    max_drop: float | None = Field(default=None, ge=0)
    system: str | None = None

    @model_validator(mode="after")
    def _has_condition(self) -> GateSpec:
        if self.min is None and self.max is None and self.max_drop is None:
            raise ValueError("a gate needs at least one of min, max or max_drop")
        return self


class JudgeSpec(_Strict):
    """The model that judge metrics (``judge``, ``judge_reference``, ``faithfulness``) call."""

    model: str = ""
    params: dict[str, Any] = Field(default_factory=dict)


class CompareJudgeSpec(JudgeSpec):
    """The pairwise judge: its model and params, a versioned prompt and the criteria it judges by."""

    prompt: str = "pairwise"
    criteria: str | None = None
    question_key: str | None = None


class CompareSpec(_Strict):
    """Comparative ranking: a pairwise judge on every example for each pair of systems.

    ``pairs`` is ``all`` (every pair of systems) or a list of ``[a, b]`` pairs. Each comparison is
    asked in both orders (position swap); ``rounds`` > 1 asks again with distinct seeds, which only
    adds information when the judge samples (``params: {temperature: 0.7}``). ``judge`` defaults to
    the suite's ``judge``. ``bootstrap`` is the number of resamples behind the ratings' intervals.
    """

    judge: CompareJudgeSpec | None = None
    pairs: Literal["all"] | list[list[str]] = "all"
    rounds: int = Field(default=1, ge=1, le=20)
    bootstrap: int = Field(default=1000, ge=100, le=100_000)

    def resolved_pairs(self, systems: list[str]) -> list[tuple[str, str]]:
        """The pairs to judge, in a stable order (suite order for ``all``)."""
        if self.pairs == "all":
            return list(itertools.combinations(systems, 2))
        return [(a, b) for a, b in self.pairs]


class Suite(_Strict):
    name: str = Field(min_length=1)
    description: str = ""
    dataset: DatasetSpec
    prompt: str = DEFAULT_PROMPT
    system_prompt: str | None = None
    systems: list[SystemSpec] = Field(min_length=1)
    metrics: list[MetricSpec] = Field(min_length=1)
    gates: list[GateSpec] = Field(default_factory=list)
    judge: JudgeSpec | None = None
    compare: CompareSpec | None = None
    concurrency: int = Field(default=8, ge=1, le=1024)
    gateway_cache: bool = Field(
        default=False,
        description="Let the gateway's exact and semantic caches answer the calls (default: bypass them).",
    )
    base_dir: Path = Field(
        default=Path("."), exclude=True, description="Set by load_suite: the file's folder."
    )

    @field_validator("systems")
    @classmethod
    def _unique_systems(cls, v: list[SystemSpec]) -> list[SystemSpec]:
        names = [s.name for s in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"system names must be unique, repeated: {', '.join(dupes)}")
        return v

    @model_validator(mode="after")
    def _gates_name_metrics(self) -> Suite:
        known = {m.options.get("name") or m.name for m in self.metrics}
        for gate in self.gates:
            if gate.metric not in known:
                raise ValueError(
                    f"gate on {gate.metric!r}, which is not among the metrics ({', '.join(sorted(known))})"
                )
        return self

    @field_validator("compare")
    @classmethod
    def _compare_names_systems(cls, compare: CompareSpec | None, info: ValidationInfo) -> CompareSpec | None:
        systems: list[SystemSpec] | None = info.data.get("systems")
        if compare is None or systems is None:  # no systems: their own error is reported
            return compare
        names = [s.name for s in systems]
        if len(names) < 2:
            raise ValueError("compare needs at least two systems to rank; add a system or remove compare")
        if compare.pairs == "all":
            return compare
        if not compare.pairs:
            raise ValueError("compare.pairs is empty; use 'all' or list pairs such as [[a, b]]")
        seen: set[frozenset[str]] = set()
        for pair in compare.pairs:
            if len(pair) != 2:
                raise ValueError(f"compare pair {pair} must name exactly two systems, e.g. [a, b]")
            unknown = [n for n in pair if n not in names]
            if unknown:
                raise ValueError(
                    f"compare pair {pair} names {', '.join(map(repr, unknown))}, which is not among "
                    f"the systems ({', '.join(names)})"
                )
            if pair[0] == pair[1]:
                raise ValueError(f"compare pair {pair} compares a system with itself")
            if frozenset(pair) in seen:
                raise ValueError(f"compare pair {pair} is listed twice (a pair is judged in both orders)")
            seen.add(frozenset(pair))
        return compare

    @property
    def dataset_path(self) -> Path:
        path = self.dataset.path.expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def select(self, names: list[str]) -> Suite:
        """The suite with only the named systems (``--system``); a ConfigError names unknown ones."""
        if not names:
            return self
        known = {s.name: s for s in self.systems}
        for name in names:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                did = f"did you mean '{close[0]}'? " if close else ""
                raise ConfigError(
                    "--system",
                    f"no system named {name!r} in suite {self.name!r}",
                    f"{did}systems: {', '.join(known)}",
                )
        update: dict[str, Any] = {"systems": [known[n] for n in names]}
        if self.compare is not None:
            # Keep the pairs among the selected systems; with none left there is nothing to rank.
            pairs = [p for p in self.compare.resolved_pairs(list(known)) if set(p) <= set(names)]
            update["compare"] = (
                self.compare.model_copy(update={"pairs": [list(p) for p in pairs]}) if pairs else None
            )
        return self.model_copy(update=update)


def parse_suite(data: Any, *, source: str = "suite", base_dir: Path = Path(".")) -> Suite:
    """Validate a parsed YAML document into a :class:`Suite`; a ConfigError names the bad key."""
    if not isinstance(data, dict):
        raise ConfigError(
            source, "a suite file must be a YAML mapping", "start from an example in examples/evals/"
        )
    try:
        suite = Suite.model_validate({**data, "base_dir": base_dir})
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "(root)"
        if err["type"] == "extra_forbidden":
            raise ConfigError(
                f"{source}: {key}", "unknown key", "remove it (see docs/evals.md for the suite format)"
            ) from None
        if err["type"] == "missing":
            raise ConfigError(
                f"{source}: {key}", "this key is required", "add it (see docs/evals.md)"
            ) from None
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(
            f"{source}: {key}", msg[0].lower() + msg[1:], "fix it (see docs/evals.md)"
        ) from None
    for i, system in enumerate(suite.systems):
        if system.agent is not None:
            from aiestack.evals.agent_systems import check_agent_system

            check_agent_system(system, i, source)
        try:
            system.to_params()
        except TypeError as exc:
            raise ConfigError(
                f"{source}: systems.{i}.params",
                str(exc),
                "use Params fields: temperature, max_tokens, stop, seed, ...",
            ) from None
    judges = [("judge", suite.judge)]
    if suite.compare is not None:
        judges.append(("compare.judge", suite.compare.judge))
    for key, judge in judges:
        if judge is None:
            continue
        try:
            SystemSpec(name="judge", params=judge.params).to_params()
        except TypeError as exc:
            raise ConfigError(
                f"{source}: {key}.params", str(exc), "use Params fields such as temperature"
            ) from None
        if key == "judge" and "response_format" in judge.params:
            raise ConfigError(
                f"{source}: judge.params.response_format",
                "judge metrics ask for their own JSON schema",
                "remove response_format from the judge's params",
            )
    if suite.compare is not None:
        _check_compare(suite.compare, source)
    return suite


def _check_compare(compare: CompareSpec, source: str) -> None:
    """The pairwise prompt must exist and the judge's params must leave the verdict format alone."""
    judge = compare.judge or CompareJudgeSpec()
    try:
        load_prompt(judge.prompt)
    except ConfigError as exc:
        raise ConfigError(
            f"{source}: compare.judge.prompt",
            f"there is no judge prompt {judge.prompt!r}",
            (exc.hint or "").removeprefix("Fix: ") or "use pairwise@1 or a path to a .txt template",
        ) from None
    if "response_format" in judge.params:
        raise ConfigError(
            f"{source}: compare.judge.params.response_format",
            "the pairwise judge sets its own JSON schema for verdicts",
            "remove response_format from the compare judge's params",
        )


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite YAML file (dataset paths become relative to the file's folder)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(
            str(path), "the suite file does not exist", "check the path (examples live in examples/evals/)"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), f"invalid YAML: {exc}", "fix the YAML syntax") from None
    return parse_suite(data, source=str(path), base_dir=path.resolve().parent)
