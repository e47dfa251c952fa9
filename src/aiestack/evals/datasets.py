"""Loading evaluation examples from JSONL, JSON, CSV or TSV files with a field mapping.

Each row becomes an :class:`~aiestack.types.Example` whose ``input`` is the whole row (so a prompt
template can use any column) plus ``input`` set to the mapped input field. Ids must be stable
across runs: they key the call cache, resumption and the pairing of a run with its baseline. A
dataset without an id field uses the row number, which is stable as long as the file is.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from aiestack.errors import ConfigError
from aiestack.evals.suite import DatasetSpec, Unpivot
from aiestack.types import Example

_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv"}


def field_value(row: Mapping[str, Any], path: str) -> Any:
    """``row[path]``, or a dotted path into nested mappings/lists (``metadata.title``, ``answers.0``)."""
    if path in row:
        return row[path]
    value: Any = row
    for part in path.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def load_examples(spec: DatasetSpec, path: Path) -> list[Example]:
    """The examples of ``spec`` read from ``path`` (offset and limit applied after unpivoting)."""
    if not path.is_file():
        raise ConfigError(
            "dataset.path",
            f"the dataset {path} does not exist",
            "check the path (it is relative to the suite file)",
        )
    fmt = spec.format if spec.format != "auto" else _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(
            "dataset.format", f"cannot tell the format of {path.name}", "set format: jsonl, json, csv or tsv"
        )
    examples: list[Example] = []
    end = None if spec.limit is None else spec.offset + spec.limit
    seen: set[str] = set()
    for index, row in enumerate(_rows(path, fmt)):
        for example in _examples(spec, index, row):
            if example.id in seen:
                raise ConfigError(
                    "dataset.id",
                    f"example id {example.id!r} occurs twice in {path.name}",
                    "point 'id' at a unique field",
                )
            seen.add(example.id)
            examples.append(example)
        if end is not None and len(examples) >= end:
            break
    selected = examples[spec.offset : end]
    if not selected:
        raise ConfigError(
            "dataset", f"no examples selected from {path}", "check offset/limit and that the file has rows"
        )
    return selected


def _rows(path: Path, fmt: str) -> Iterator[dict[str, Any]]:
    if fmt == "jsonl":
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    yield _object(_parse_line(line, path, number), path, number)
    elif fmt == "json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise ConfigError(
                "dataset.path", f"{path.name} is not a JSON list of objects", "use a list, or JSONL"
            )
        for number, item in enumerate(data, 1):
            yield _object(item, path, number)
    else:
        with path.open(encoding="utf-8", newline="") as handle:
            yield from csv.DictReader(handle, delimiter="\t" if fmt == "tsv" else ",")


def _parse_line(line: str, path: Path, number: int) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            "dataset.path",
            f"{path.name} line {number} is not valid JSON ({exc.msg})",
            "fix or remove the line",
        ) from None


def _object(item: Any, path: Path, number: int) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise ConfigError(
            "dataset.path", f"{path.name} item {number} is not an object", "each row must be a JSON object"
        )
    return item


def _examples(spec: DatasetSpec, index: int, row: dict[str, Any]) -> Iterator[Example]:
    base_id = str(field_value(row, spec.id)) if spec.id else f"{index:06d}"
    if spec.id and field_value(row, spec.id) is None:
        raise ConfigError(
            "dataset.id", f"row {index} has no field {spec.id!r}", "point 'id' at a field every row has"
        )
    if spec.unpivot is None:
        yield _example(spec, base_id, row)
        return
    yield from _unpivoted(spec, spec.unpivot, base_id, row)


def _unpivoted(spec: DatasetSpec, unpivot: Unpivot, base_id: str, row: dict[str, Any]) -> Iterator[Example]:
    for column, label in unpivot.columns.items():
        value = field_value(row, column)
        if value is None:
            continue
        variant = {key: val for key, val in row.items() if key not in unpivot.columns}
        variant[unpivot.into] = value
        variant[unpivot.label] = label
        yield _example(spec, f"{base_id}:{column}", variant)


def _example(spec: DatasetSpec, example_id: str, row: dict[str, Any]) -> Example:
    value = field_value(row, spec.input)
    if value is None:
        raise ConfigError(
            "dataset.input",
            f"example {example_id} has no field {spec.input!r}",
            f"map 'input' to one of: {', '.join(row)}",
        )
    reference = field_value(row, spec.reference) if spec.reference else None
    if spec.reference_split and isinstance(reference, str):
        reference = [part.strip() for part in reference.split(spec.reference_split) if part.strip()]
    metadata = {name: field_value(row, name) for name in spec.metadata}
    return Example(id=example_id, input={**row, "input": value}, reference=reference, metadata=metadata)
