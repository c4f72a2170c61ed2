"""The catalog: tasks with parameter schemas, methods with grid keys, constraint kinds."""

from __future__ import annotations

from functools import cache
from typing import Any

from dualtune.core.catalog import CONSTRAINT_KINDS, GRID_KEYS, METHODS, TASKS


@cache  # the catalog is code: it changes only with a new release
def catalog() -> dict[str, Any]:
    return {
        "tasks": [
            {
                "name": t.name,
                "problem": t.problem,
                "summary": t.summary,
                "group_attributes": list(t.group_attributes),
                "parameters": t.params.model_json_schema(),
            }
            for t in TASKS.values()
        ],
        "methods": [
            {
                "name": m.name,
                "summary": m.summary,
                "grid_keys": list(m.grid_keys),
                "constraint_kinds": list(m.kinds),
            }
            for m in METHODS.values()
        ],
        "constraint_kinds": [
            {"name": k.name, "summary": k.summary, "multipliers": k.multipliers}
            for k in CONSTRAINT_KINDS.values()
        ],
        "grid_keys": [
            {"name": g.name, "summary": g.summary, "default": g.default}
            for g in GRID_KEYS.values()
        ],
    }
