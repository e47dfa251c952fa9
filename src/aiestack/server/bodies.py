"""Request bodies: bytes → a validated pydantic model in one pass, or a 400 that says what is wrong.

The OpenAI routes read their body themselves instead of letting FastAPI do it: pydantic-core
parses and validates the raw bytes in a single pass (``model_validate_json``), which is several
times cheaper than FastAPI's ``json.loads`` + dependency solving + validation, and it lets every
malformed body get the OpenAI error shape with status 400 (FastAPI's default is a 422 in its own
shape, which OpenAI clients do not understand). The OpenAPI schema still describes each body (see
:func:`body_openapi` and :func:`aiestack.server.app.openapi_components`).
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from aiestack.errors import InvalidRequest

M = TypeVar("M", bound=BaseModel)

_MAX_LISTED = 3  # errors named in one message; more are summarised as a count


class InvalidBody(InvalidRequest):
    """The body is not JSON, or not the shape the endpoint takes. ``param`` names the first bad field."""

    def __init__(self, message: str, *, param: str | None = None, hint: str | None = None) -> None:
        self.param = param
        super().__init__(message, hint=hint)

    def to_openai(self) -> dict[str, Any]:
        body = super().to_openai()
        body["error"]["param"] = self.param
        return body


def parse_body(model: type[M], raw: bytes) -> M:
    """Validate ``raw`` as ``model``; raise :class:`InvalidBody` describing the first problems."""
    if not raw.strip():
        raise InvalidBody(
            "The request has no body.",
            hint="Send a JSON object with Content-Type: application/json.",
        )
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise invalid_body(exc.errors(include_url=False, include_context=False)) from None


def check_text_sizes(body: BaseModel, max_chars: int, *, raw_bytes: int | None = None) -> None:
    """Raise :class:`InvalidBody` naming the first string field of ``body`` longer than ``max_chars``.

    Every string in the body counts (message text, tool arguments and schemas, stop sequences, user
    ids, metadata), wherever it is nested: the guards, the tokenizer and the stores all read them.
    ``raw_bytes``, the size of the JSON the body was parsed from, skips the walk when no string can
    be that long: a decoded JSON string never has more characters than its encoding has bytes.
    """
    if raw_bytes is not None and raw_bytes <= max_chars:
        return
    path = _too_long(body, max_chars, ())
    if path is not None:
        where = ".".join(str(p) for p in path)
        raise InvalidBody(
            f"{where} is longer than this server's limit of {max_chars:,} characters per text field.",
            param=str(path[0]) if path else None,
            hint="Send shorter text, or raise [gateway] max_text_chars in aiestack.toml.",
        )


def _too_long(value: Any, limit: int, path: tuple[str | int, ...]) -> tuple[str | int, ...] | None:
    if isinstance(value, str):
        return path if len(value) > limit else None
    if isinstance(value, BaseModel):
        items: Any = ((name, getattr(value, name)) for name in type(value).model_fields)
    elif isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        if isinstance(key, str) and len(key) > limit:
            return (*path, key[:20] + "…")
        found = _too_long(item, limit, (*path, key))
        if found is not None:
            return found
    return None


def invalid_body(errors: list[ErrorDetails]) -> InvalidBody:
    """One readable sentence for pydantic's errors: ``messages.0.role: Input should be ...``."""
    if any(err["type"] == "json_invalid" for err in errors):
        return InvalidBody(
            "The request body is not valid JSON.",
            hint="Send a JSON object with Content-Type: application/json (check quotes and commas).",
        )
    if (
        len(errors) == 1
        and not errors[0]["loc"]
        and errors[0]["type"] in ("model_type", "model_attributes_type")
    ):
        return InvalidBody(
            "The request body must be a JSON object.", hint="Send {...} with the endpoint's fields."
        )
    # A value that fits no member of a union fails once per member, at one location: say it once.
    by_loc: dict[str, list[str]] = {}
    for err in errors:
        by_loc.setdefault(_loc(err) or "body", []).append(_msg(err))
    parts = [f"{loc}: {' or '.join(dict.fromkeys(msgs))}" for loc, msgs in list(by_loc.items())[:_MAX_LISTED]]
    more = len(by_loc) - _MAX_LISTED
    tail = f" (and {more} more)" if more > 0 else ""
    first = _loc(errors[0]) if errors else ""
    return InvalidBody(
        "Invalid request: " + "; ".join(parts) + tail + ".",
        param=first.split(".", 1)[0] or None,
        hint="See the OpenAI API reference for this endpoint's fields.",
    )


def _loc(err: ErrorDetails) -> str:
    # Unions add the tried member's name to the location (``content.str``); people name fields.
    return ".".join(str(p) for p in err["loc"] if not _is_union_tag(p))


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


def _is_union_tag(part: int | str) -> bool:
    """Union members appear as ``str``, ``list[int]``, ``ContentPartIn``; field names are lower case."""
    return isinstance(part, str) and (part in _TYPE_TAGS or "[" in part or part[:1].isupper())


def _msg(err: ErrorDetails) -> str:
    message = err["msg"]
    if err["type"] == "missing":
        return "this field is required"
    given = err.get("input")
    if isinstance(given, str | int | float | bool) and err["type"] != "missing":
        shown = repr(given) if len(repr(given)) <= 40 else repr(given)[:37] + "..."
        return f"{message[0].lower()}{message[1:]} (got {shown})"
    return message[0].lower() + message[1:]


def body_openapi(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads its body itself: the body's schema, by reference."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
        }
    }
