"""``flywheel.yaml``: what one turn of the flywheel builds, tries, evaluates and promotes.

The file is validated into a :class:`FlywheelSpec` (pydantic at this edge); a mistake is a
:class:`~aiestack.errors.ConfigError` naming the field (``candidate.rewrites``) and the fix, before
anything runs. Paths are relative to the file. docs/flywheel.md documents the shape::

    name: shout
    dataset:                      # build (and curate) a dataset version: examples for the candidate
      name: shout-good
      from: exchanges             # exchanges | file | suite
      filters: {route: shout, min_feedback: 0.75}
      curate: [exact, near, quality]
    candidate:                    # what to try: prompt | dicl | sft | dpo
      kind: prompt
      prompt: shout               # optimise shout@production (see `aiestack prompts optimise`)
      suite: dev.yaml
      rewrites: 2
    evaluate:                     # the candidate against the current deployment, same examples
      suite: test.yaml
      min_gain: 0.0               # null: no regression is enough (an A/B decides the rest)
    promote:
      label: production           # prompt: move this label to the candidate version
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExchangeFilters(_Strict):
    """Which exchanges a dataset is built from (the options of ``aiestack datasets build``)."""

    route: str | None = None
    model: str | None = None
    tenant: str | None = None
    since: float | None = Field(default=None, description="A UTC date (YYYY-MM-DD) or date-time; epoch seconds in the store.")
    until: float | None = Field(default=None, description="A UTC date (inclusive) or date-time.")
    min_feedback: float | None = Field(default=None, ge=0, le=1)
    guard: Literal["any", "none", "flag", "redact"] = "any"
    prompt: str | None = None
    prompt_version: int | None = Field(default=None, ge=1)
    limit: int | None = Field(default=None, ge=1)

    @field_validator("since", "until", mode="before")
    @classmethod
    def _moment(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None or isinstance(value, int | float):
            return value
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):  # YAML reads 2026-11-01 as a date
            value = value.isoformat()
        if isinstance(value, dt.datetime):
            moment = value
        else:
            try:
                if len(str(value)) == 10:
                    day = dt.date.fromisoformat(str(value))
                    moment = dt.datetime(day.year, day.month, day.day) + dt.timedelta(days=1 if info.field_name == "until" else 0)
                else:
                    moment = dt.datetime.fromisoformat(str(value))
            except ValueError:
                raise ValueError(f"{value!r} is not a date; use YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)") from None
        return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()


class DatasetStep(_Strict):
    """Build a version of ``name`` (then curate it into a new version when ``curate`` is given)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,127}$")
    source: Literal["exchanges", "file", "suite"] = Field(default="exchanges", alias="from")
    kind: Literal["chat", "preference"] = Field(default="chat", description="preference: pairs, for a dpo candidate.")
    path: Path | None = None
    filters: ExchangeFilters = Field(default_factory=ExchangeFilters)
    curate: list[Literal["exact", "near", "quality", "pii", "contamination"]] = Field(default_factory=list)
    against: list[Path] = Field(default_factory=list, description="contamination: eval suites to check against.")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _consistent(self) -> DatasetStep:
        if self.source != "exchanges" and self.path is None:
            raise ValueError(f"from: {self.source} needs a path")
        if self.source == "exchanges" and self.path is not None:
            raise ValueError("a path is for from: file or from: suite; exchanges are chosen by filters")
        if "contamination" in self.curate and not self.against:
            raise ValueError("the contamination step needs against: [suite.yaml, ...]")
        return self


class PromptCandidate(_Strict):
    """Optimise a registry prompt (rewrites and few-shot sets from the dataset), scored on ``suite``."""

    kind: Literal["prompt"]
    prompt: str = Field(min_length=1, description="NAME (its production label) or NAME@LABEL / NAME@VERSION.")
    suite: Path
    system: str | None = None
    rewrites: int = Field(default=3, ge=0, le=20)
    model: str | None = None
    examples: bool = Field(default=True, description="Few-shot sets from the dataset step's version.")
    shots: list[int] = Field(default_factory=lambda: [2, 4])
    sets: int = Field(default=2, ge=1, le=20)
    metric: str | None = None
    seed: int = 0

    @model_validator(mode="after")
    def _something_to_try(self) -> PromptCandidate:
        if self.rewrites == 0 and not self.examples:
            raise ValueError("nothing to try: set rewrites above 0 or examples: true")
        if any(k < 1 for k in self.shots):
            raise ValueError("every number of shots must be at least 1")
        return self


class DiclCandidate(_Strict):
    """Dynamic in-context learning on ``route`` with the dataset step's version as its examples."""

    kind: Literal["dicl"]
    route: str = Field(min_length=1)
    k: int = Field(default=3, ge=1, le=16)
    min_similarity: float = Field(default=0.3, ge=-1, le=1)


class LoraCandidate(_Strict):
    """A LoRA adapter trained on the dataset step's version (``aiestack.finetune.sft`` or ``dpo``), served
    by the llama_cpp provider as the new model ``name``, tried as ``route``'s deployment."""

    kind: Literal["sft", "dpo"]
    route: str = Field(min_length=1)
    name: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$", description="The new [models.NAME] (default: ROUTE-KIND).")
    base: str = Field(default="embedded", description="The model trained: embedded (the packaged Gemma 3 270M) or a path.")
    r: int = Field(default=16, ge=1, le=256)
    alpha: int = Field(default=32, ge=1)
    max_steps: int = Field(default=60, ge=1)
    lr: float = Field(default=2e-4, gt=0)
    budget_minutes: float | None = Field(default=None, gt=0)
    share: float = Field(default=0.1, gt=0, le=1, description="The new deployment's share of the route's traffic on promotion "
                         "(an A/B beside the current deployments; 1: it replaces them).")


class EmbeddingCandidate(_Strict):
    """A finetuned embedding model for ``collection`` (``aiestack.finetune.embedding_run``): trained on the
    dataset step's judgements (rows citing their chunks), the collection re-indexed into a new version."""

    kind: Literal["embedding"]
    collection: str = Field(min_length=1)
    holdout: float = Field(default=0.2, gt=0, lt=1, description="Share of the questions held out: the gate compares on them.")
    epochs: float = Field(default=1.0, gt=0)
    max_steps: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=32, ge=2)
    mode: Literal["hybrid", "vector"] = Field(default="hybrid", description="The retrieval mode compared.")
    metric: Literal["ndcg@10", "recall@10", "recall@100", "mrr@10"] = "ndcg@10"
    dev: float = Field(default=0.0, ge=0, lt=1, description=(
        "Share of the training questions held out to choose the hybrid vector weight for the new model, which is then "
        "trained again on all of them (0: none). The weight is reported, not applied: the gate compares at the routes' weight."))
    seed: int = 0


Candidate = Annotated[PromptCandidate | DiclCandidate | LoraCandidate | EmbeddingCandidate, Field(discriminator="kind")]


class EvaluateStep(_Strict):
    """The candidate against the current deployment on ``suite`` (the same examples for both)."""

    suite: Path | None = Field(default=None, description="Required, except for an embedding candidate (held-out questions).")
    system: str | None = None
    metric: str | None = None
    min_gain: float | None = Field(default=0.0, description="The least gain at the interval's low end; null: no regression is enough.")
    limit: int | None = Field(default=None, ge=1)


class PromoteStep(_Strict):
    """What a passing gate changes: a prompt label, or the route's DICL examples (in the config file)."""

    label: str = Field(default="production", description="prompt: move this label to the candidate version.")
    config: Path | None = Field(default=None, description="dicl, sft, dpo: the aiestack.toml to change (default: the one in use).")


class FlywheelSpec(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$")
    description: str = ""
    dataset: DatasetStep | None = None
    candidate: Candidate
    evaluate: EvaluateStep
    promote: PromoteStep = Field(default_factory=PromoteStep)
    base_dir: Path = Field(default=Path("."), exclude=True)

    @model_validator(mode="after")
    def _fits(self) -> FlywheelSpec:
        if not isinstance(self.candidate, EmbeddingCandidate) and self.evaluate.suite is None:
            raise ValueError(f"evaluate.suite: a {self.candidate.kind} candidate is evaluated on a suite; this field is required")
        if isinstance(self.candidate, DiclCandidate | LoraCandidate | EmbeddingCandidate) and self.dataset is None:
            raise ValueError(f"a {self.candidate.kind} candidate needs a dataset step: it uses the dataset's version")
        wanted = "preference" if isinstance(self.candidate, LoraCandidate) and self.candidate.kind == "dpo" else "chat"
        if self.dataset is not None and self.dataset.kind != wanted:
            raise ValueError(f"a {self.candidate.kind} candidate needs dataset.kind: {wanted}")
        if isinstance(self.candidate, PromptCandidate) and self.candidate.rewrites == 0 and self.dataset is None:
            raise ValueError("a prompt candidate without rewrites needs a dataset step for its few-shot sets")
        return self

    def path(self, value: Path) -> Path:
        value = value.expanduser()
        return value if value.is_absolute() else self.base_dir / value

    def fingerprint(self) -> str:
        """A hash of what the file asks for: a resumed run must run the same spec."""
        data = self.model_dump(mode="json", by_alias=True)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


_MODELS: tuple[type[BaseModel], ...] = ()


def parse_flywheel(data: Any, *, source: str = "flywheel.yaml", base_dir: Path = Path(".")) -> FlywheelSpec:
    """Validate a parsed YAML document; a ConfigError names the field and the fix."""
    if not isinstance(data, dict):
        raise ConfigError(source, "a flywheel file must be a YAML mapping", "start from examples/flywheel/flywheel.yaml")
    try:
        return FlywheelSpec.model_validate({**data, "base_dir": base_dir})
    except ValidationError as exc:
        errors = exc.errors()
        # a misspelt field is both unknown and (its right name) missing: name the misspelling first
        err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        missing = [str(e["loc"][-1]) for e in errors if e["type"] == "missing" and e["loc"][:-1] == err["loc"][:-1]]
        missing = missing or sorted({f.alias or n for m in _MODELS for n, f in m.model_fields.items()})
        loc = [str(p) for p in err["loc"]]
        if len(loc) >= 2 and loc[0] == "candidate" and loc[1] in ("prompt", "dicl", "sft", "dpo", "embedding"):
            loc.pop(1)  # the union's tag is not a field the user wrote
        key = ".".join(loc) or "(root)"
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(loc[-1], missing, n=1)
            did = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(f"{source}: {key}", "unknown field", f"{did}remove or rename it (see docs/flywheel.md for the fields)") from None
        if err["type"] == "missing":
            raise ConfigError(f"{source}: {key}", "this field is required", "add it (see docs/flywheel.md)") from None
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            raise ConfigError(f"{source}: {key}.kind" if key == "candidate" else f"{source}: {key}",
                              "candidate.kind must be one of: prompt, dicl, sft, dpo, embedding", "set kind: prompt, dicl, sft, dpo or embedding") from None
        msg = err["msg"].removeprefix("Value error, ")
        named, sep, rest = msg.partition(": ")
        if key == "(root)" and sep and re.fullmatch(r"[a-z_]+(\.[a-z_]+)+", named):  # a rule across fields names its field
            key, msg = named, rest
        raise ConfigError(f"{source}: {key}", msg[0].lower() + msg[1:], "fix it (see docs/flywheel.md)") from None


_MODELS = (ExchangeFilters, DatasetStep, PromptCandidate, DiclCandidate, LoraCandidate, EmbeddingCandidate, EvaluateStep,
           PromoteStep, FlywheelSpec)


def load_flywheel(path: str | Path) -> FlywheelSpec:
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(str(path), "the flywheel file does not exist", "check the path (an example: examples/flywheel/flywheel.yaml)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), f"invalid YAML: {exc}", "fix the YAML syntax") from None
    return parse_flywheel(data, source=str(path), base_dir=path.resolve().parent)
