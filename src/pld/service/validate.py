"""Request bodies for ``POST /v1/classify``, checked before anything reaches the queue.

Accepted shapes (``application/json``)::

    {"input":  {"id": "t1", "text": "..."}}              one item -> one result object
    {"inputs": [{"id": "t1", "text": "..."}, ...]}       a list   -> {"results": [...]}

An item holds exactly the rulebook's input fields (strings) and an optional ``id`` (string or
integer; defaults to its position). Unknown fields are refused rather than ignored: a typo
(``"txt"``) would otherwise be classified as an empty ticket. Every refusal names the item and
field and says what to send instead; the status says which kind of mistake it is (400 not
JSON, 413 too large, 415 wrong content type, 422 wrong shape).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class RequestError(Exception):
    """A request the service refuses; ``status`` and ``code`` go into the 4xx answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class InputLimits:
    """Bounds on one request, checked before any work is queued, so one client cannot take the
    engine's memory or slots; each violation is a 413."""

    max_body_bytes: int = 256 * 1024
    max_input_chars: int = 16_000  # per item, all fields together
    max_items: int = 64  # per request


@dataclass(frozen=True)
class ParsedRequest:
    """A request that passed validation: item ids and fields in order, and whether it used the
    single-item form (``input``) so the answer keeps the same shape."""

    ids: list[str]
    items: list[dict[str, str]]
    single: bool


def _type_name(v: Any) -> str:
    return {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "number",
        float: "number",
        type(None): "null",
    }.get(type(v), type(v).__name__)


def check_content_type(value: str | None) -> None:
    """Refuse a body that is not declared JSON with 415, before it is read."""
    media = (value or "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise RequestError(
            415,
            "unsupported_media_type",
            "send the body as JSON with 'Content-Type: application/json' "
            f"(got {value or 'none'!r})",
        )


def decode_json(body: bytes) -> Any:
    """The parsed body; bad UTF-8 or bad JSON is a 400 that says where it broke."""
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise RequestError(400, "malformed_json", f"the body is not UTF-8: {e.reason}") from e
    except json.JSONDecodeError as e:
        raise RequestError(
            400,
            "malformed_json",
            f"the body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}",
        ) from e


def _item(
    k: int, raw: Any, where: str, fields: Sequence[str], limits: InputLimits
) -> tuple[str, dict[str, str]]:
    need = ", ".join(fields)
    if not isinstance(raw, Mapping):
        raise RequestError(
            422,
            "invalid_item",
            f"{where} must be a JSON object with the field(s) {need}, got {_type_name(raw)}",
        )
    unknown = sorted(set(raw) - set(fields) - {"id"})
    if unknown:
        raise RequestError(
            422,
            "unknown_field",
            f"{where} has unknown field(s) {unknown}; this rulebook takes {need}",
        )
    item_id = raw.get("id", k)
    if isinstance(item_id, bool) or not isinstance(item_id, str | int):
        raise RequestError(
            422, "invalid_id", f"{where}.id must be a string or integer, got {_type_name(item_id)}"
        )
    out: dict[str, str] = {}
    for f in fields:
        if f not in raw:
            raise RequestError(422, "missing_field", f"{where} is missing the field {f!r}")
        v = raw[f]
        if not isinstance(v, str):
            raise RequestError(
                422, "invalid_field", f"{where}.{f} must be a string, got {_type_name(v)}"
            )
        out[f] = v
    size = sum(len(v) for v in out.values())
    if size > limits.max_input_chars:
        raise RequestError(
            413,
            "input_too_large",
            f"{where} has {size} characters; the limit is {limits.max_input_chars} per item "
            "(shorten it, or start the service with a larger --max-input-chars)",
        )
    return str(item_id), out


def parse_request(doc: Any, fields: Sequence[str], limits: InputLimits) -> ParsedRequest:
    """Check a decoded body against the rulebook's input fields and the limits, so nothing
    invalid reaches the queue: the first problem is a ``RequestError`` (4xx) naming its item."""
    shape = 'send {"input": {...}} for one item or {"inputs": [{...}, ...]} for a list'
    if not isinstance(doc, Mapping):
        raise RequestError(422, "invalid_body", f"the body must be a JSON object; {shape}")
    keys = set(doc)
    if keys == {"input"}:
        raws: list[Any] = [doc["input"]]
        single = True
    elif keys == {"inputs"}:
        if not isinstance(doc["inputs"], list):
            raise RequestError(
                422, "invalid_body", f"inputs must be an array, got {_type_name(doc['inputs'])}"
            )
        raws, single = doc["inputs"], False
        if not raws:
            raise RequestError(422, "invalid_body", "inputs is empty; send at least one item")
        if len(raws) > limits.max_items:
            raise RequestError(
                413,
                "too_many_items",
                f"{len(raws)} items in one request; the limit is {limits.max_items} "
                "(split the list into several requests)",
            )
    else:
        raise RequestError(
            422, "invalid_body", f"unexpected top-level keys {sorted(keys)}; {shape}"
        )
    ids: list[str] = []
    items: list[dict[str, str]] = []
    for k, raw in enumerate(raws):
        i, fields_k = _item(k, raw, "input" if single else f"inputs[{k}]", fields, limits)
        ids.append(i)
        items.append(fields_k)
    dup = sorted(i for i, n in Counter(ids).items() if n > 1)
    if dup:
        raise RequestError(
            422, "duplicate_id", f"item ids must be unique within a request; repeated: {dup}"
        )
    return ParsedRequest(ids, items, single)
