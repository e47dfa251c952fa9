"""JSON output validation against the request's ``response_format``, with a re-ask message.

When a request asks for ``json_object`` the answer must parse as a JSON object; for ``json_schema``
it must also validate against the schema. A failure yields a finding that says what is wrong (the
JSON path and the validator's message, never more than a line) and a user message to re-ask the
model with (:func:`reask_message`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from aiestack.types import Finding, Message, ResponseFormat

_FENCE = re.compile(r"^\s*```(?:json)?\s*\n?(.*?)\n?```\s*$", re.S)


def extract_json(text: str) -> str:
    """The JSON document in ``text``: the whole text, or the inside of one Markdown code fence."""
    m = _FENCE.match(text)
    return m.group(1) if m else text


def validate(text: str, fmt: ResponseFormat | None) -> list[Finding]:
    """Findings (empty when valid) of ``text`` against ``fmt``; plain ``text`` formats always pass."""
    if fmt is None or fmt.type == "text":
        return []
    try:
        value: Any = json.loads(extract_json(text))
    except json.JSONDecodeError as exc:
        return [Finding(kind="schema.invalid_json", score=1.0, label=f"not valid JSON: {exc.msg} at character {exc.pos}")]
    if fmt.type == "json_object" or fmt.schema is None:
        if not isinstance(value, dict):
            return [Finding(kind="schema.not_object", score=1.0, label=f"expected a JSON object, got {type(value).__name__}")]
        return []
    try:
        validator = Draft202012Validator(dict(fmt.schema))
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    except SchemaError as exc:
        return [Finding(kind="schema.bad_schema", score=1.0, label=f"the schema itself is invalid: {exc.message[:200]}")]
    return [
        Finding(kind="schema.mismatch", score=1.0, label=f"at {_path(e.absolute_path)}: {e.message[:200]}")
        for e in errors[:5]
    ]


def _path(parts: Any) -> str:
    path = "$"
    for p in parts:
        path += f"[{p}]" if isinstance(p, int) else f".{p}"
    return path


def reask_message(findings: list[Finding], fmt: ResponseFormat) -> Message:
    """The user turn that asks the model to fix its answer."""
    problems = "; ".join(f.label or f.kind for f in findings)
    want = "a JSON object"
    if fmt.type == "json_schema" and fmt.schema is not None:
        want = "JSON that validates against this schema: " + json.dumps(fmt.schema, separators=(",", ":"))
    return Message(
        role="user",
        content=f"Your previous answer was rejected: {problems}. Reply again with only {want}, and nothing else.",
    )
