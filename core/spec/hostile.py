"""Values no spec or event may hold, wherever they sit in a free-form document.

Python's ``json`` parser accepts ``NaN``, ``Infinity`` and integers of any size, and a JSON
string may carry a NUL character; none of them means anything in a sweep, and each breaks a
layer further on (Postgres refuses NUL in text and ``NaN`` in JSON, SQLite cannot bind an
integer past 64 bits, ``float(10**400)`` overflows). Typed fields refuse them through their
models; this walks the free parts (a spec before it is parsed, a task's parameters, event
metrics) so the refusal names the exact path, with what to do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

MAX_DEPTH = 32
"""Nesting deeper than any spec section (task parameters included) needs."""
INT_LIMIT = 2**63
"""Integers must fit a signed 64-bit column or a float without overflow."""

NON_FINITE = "must be a finite number (JSON has no NaN or Infinity); give a finite value"
NUL_VALUE = "contains a NUL character (\\u0000); remove it"
NUL_KEY = "a key contains a NUL character (\\u0000); remove it from the key"
HUGE_INT = "integer out of range: must lie between -2**63 and 2**63-1; give a smaller number"
TOO_DEEP = f"nested more than {MAX_DEPTH} levels deep; a spec's sections are far flatter"


def _shown(key: str) -> str:
    return key.replace("\x00", "\\u0000")


def hostile_values(data: object, prefix: str = "") -> list[tuple[str, str]]:
    """``(field, message)`` for each NUL character (in a value or a key), non-finite number
    or integer beyond 64 bits anywhere in ``data``; fields are dotted paths under ``prefix``
    (list items by index). Empty when ``data`` is clean. Iterative, so nesting cannot
    exhaust the stack; nesting beyond ``MAX_DEPTH`` is itself a problem."""
    items: list[tuple[str, str]] = []
    stack: list[tuple[str, object, int]] = [(prefix, data, 0)]
    while stack:
        path, value, depth = stack.pop()
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, float):
            if not math.isfinite(value):
                items.append((path, NON_FINITE))
        elif isinstance(value, int):
            if not -INT_LIMIT <= value < INT_LIMIT:
                items.append((path, HUGE_INT))
        elif isinstance(value, str):
            if "\x00" in value:
                items.append((path, NUL_VALUE))
        elif depth >= MAX_DEPTH and isinstance(value, Mapping | list | tuple):
            items.append((path, TOO_DEEP))
        elif isinstance(value, Mapping):
            children: list[tuple[str, object, int]] = []
            for key, child in value.items():
                name = str(key)
                child_path = f"{path}.{_shown(name)}" if path else _shown(name)
                if "\x00" in name:
                    items.append((child_path, NUL_KEY))
                children.append((child_path, child, depth + 1))
            stack.extend(reversed(children))
        elif isinstance(value, Sequence):
            stack.extend(
                reversed(
                    [
                        (f"{path}.{i}" if path else str(i), v, depth + 1)
                        for i, v in enumerate(value)
                    ]
                )
            )
    return items
