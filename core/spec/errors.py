"""``SpecError``: every problem with a spec, each naming its field, readable by a person."""

from __future__ import annotations

import re
from typing import TypedDict

from pydantic import ValidationError
from pydantic_core import PydanticCustomError


class FieldError(TypedDict):
    field: str
    message: str


# Pydantic's location parts that name validators or union members, not spec fields.
_NOISE = re.compile(
    r"^(function-|tagged-union|union\[|literal\[|list\[|dict\[|int$|float$|str$|"
    r"bool$|json-or-python|lax-or-strict|chain\[|constrained-|[a-z_]+Constraint$)"
)
_PREFIXES = ("Value error, ", "Assertion failed, ")


class SpecError(ValueError):
    """A sweep spec that cannot run; ``errors`` lists ``{field, message}`` items."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__(
            "\n".join(
                f"{e['field']}: {e['message']}" if e["field"] else e["message"] for e in errors
            )
        )

    @classmethod
    def from_validation(cls, exc: ValidationError, prefix: str = "") -> SpecError:
        return cls(
            [{"field": field, "message": message} for field, message in error_items(exc, prefix)]
        )


def error_items(exc: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    """``(field, message)`` for each error of ``exc``: fields as dotted spec paths under
    ``prefix`` (without pydantic's validator and union names), messages for a person."""
    items: list[tuple[str, str]] = []
    for err in exc.errors():
        parts = [str(p) for p in err["loc"] if not _NOISE.match(str(p))]
        field = ".".join(([prefix] if prefix else []) + parts)
        ctx = err.get("ctx") or {}
        if err["type"] == FIELD_ERRORS:
            for sub, message in ctx["items"]:
                items.append((".".join(p for p in (field, sub) if p), message))
            continue
        message = str(err["msg"])
        for p in _PREFIXES:
            message = message.removeprefix(p)
        if err["type"] == "extra_forbidden":
            message = UNKNOWN_FIELD
        items.append((field, message))
    return items


UNKNOWN_FIELD = "unknown field; remove it (see the spec reference in ARCHITECTURE §3.1)"
FIELD_ERRORS = "dualtune_field_errors"


def field_errors(items: list[tuple[str, str]]) -> PydanticCustomError:
    """An error for pydantic to raise from a validator, naming sub-fields of the field being
    validated (pydantic alone would attribute a validator's error to the whole model)."""
    return PydanticCustomError(
        FIELD_ERRORS,
        "{summary}",
        {"summary": "; ".join(f"{f}: {m}" if f else m for f, m in items), "items": items},
    )
