"""Answers with structure: JSON validity and JSON Schema conformance, and numeric answers.

Numeric match extracts the *final* number of a text, the way GSM8K is graded: the number after
``####`` when there is one, else the last number in the text. Thousands separators, a currency
sign, a percent sign, a sign and decimals are understood (``-$1,234.50`` → -1234.5; ``50%`` → 50,
the number as written). The reference goes through the same extraction, so a GSM8K reference with
its worked solution and ``#### 72`` works as is.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import jsonschema
from pydantic import Field, field_validator

from aiestack.answers import final_number
from aiestack.evals.base import Sample, Score
from aiestack.evals.metrics.options import MetricOptions, ReferenceOptions, lookup, reference_texts

_FENCE = re.compile(r"^\s*```[\w-]*\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)


def strip_fences(text: str) -> str:
    """The content of a Markdown code block wrapping the whole text, else the text stripped."""
    match = _FENCE.match(text)
    return match.group(1).strip() if match else text.strip()


class JsonValid:
    """1.0 when the output (optionally inside a code fence) parses as JSON."""

    higher_is_better = True

    def __init__(self, name: str, opts: MetricOptions) -> None:
        self.name = name

    async def score(self, sample: Sample) -> Score:
        try:
            json.loads(strip_fences(sample.output))
        except json.JSONDecodeError as exc:
            return Score(0.0, {"reason": f"not JSON: {exc}"})
        return Score(1.0)


class JsonSchemaOptions(ReferenceOptions):
    """The schema is given inline (``schema``) or per example (``schema_key``)."""

    json_schema: Mapping[str, Any] | None = Field(default=None, alias="schema")
    schema_key: str | None = None

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, value: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
        if value is not None:
            try:
                jsonschema.validators.validator_for(value).check_schema(dict(value))
            except jsonschema.SchemaError as exc:
                raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
        return value


class JsonSchemaMatch:
    """1.0 when the output is JSON that conforms to the schema; the first violation is in the detail."""

    higher_is_better = True

    def __init__(self, name: str, opts: JsonSchemaOptions) -> None:
        self.name = name
        self._schema = opts.json_schema
        self._key = opts.schema_key

    async def score(self, sample: Sample) -> Score:
        schema = self._schema if self._schema is not None else lookup(sample, self._key)
        if not isinstance(schema, Mapping):
            return Score(None, error="no JSON Schema: set 'json_schema' or 'schema_key' for the metric")
        try:
            document = json.loads(strip_fences(sample.output))
        except json.JSONDecodeError as exc:
            return Score(0.0, {"reason": f"not JSON: {exc}"})
        validator = jsonschema.validators.validator_for(schema)(schema)
        error = jsonschema.exceptions.best_match(validator.iter_errors(document))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            return Score(0.0, {"reason": f"at {where}: {error.message}"})
        return Score(1.0)


class NumericOptions(ReferenceOptions):
    abs_tol: float = 1e-6
    rel_tol: float = 0.0


class NumericMatch:
    """1.0 when the final number of the output equals the reference's within the tolerances."""

    higher_is_better = True

    def __init__(self, name: str, opts: NumericOptions) -> None:
        self.name = name
        self._opts = opts

    async def score(self, sample: Sample) -> Score:
        refs = reference_texts(sample, self._opts.reference_key)
        gold = [n for n in (final_number(r) for r in refs) if n is not None]
        if not gold:
            return Score(None, error="the example has no numeric reference")
        predicted = final_number(sample.output)
        detail = {"predicted": predicted, "reference": gold[0]}
        if predicted is None:
            return Score(0.0, {**detail, "reason": "no number in the output"})
        ok = any(
            math.isclose(predicted, g, rel_tol=self._opts.rel_tol, abs_tol=self._opts.abs_tol) for g in gold
        )
        return Score(float(ok), detail)
