"""The catalog: tasks with parameter schemas, methods with grid keys, constraint kinds, each
task's and kind's source, and the plugins that failed to load."""

from __future__ import annotations

from functools import cache
from typing import Any

from dualtune.core.catalog import (
    CONSTRAINT_KINDS,
    GRID_KEYS,
    METHODS,
    TASKS,
    plugin_errors,
)


@cache  # plugins are discovered once per process: the catalog cannot change after that
def catalog() -> dict[str, Any]:
    return {
        "tasks": [
            {
                "name": t.name,
                "problem": t.problem,
                "summary": t.summary,
                "group_attributes": list(t.group_attributes),
                "parameters": t.params.model_json_schema(),
                "source": TASKS.source(t.name),
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
            {
                "name": k.name,
                "summary": k.summary,
                "multipliers": k.multipliers,
                "source": CONSTRAINT_KINDS.source(k.name),
            }
            for k in CONSTRAINT_KINDS.values()
        ],
        "grid_keys": [
            {"name": g.name, "summary": g.summary, "default": g.default}
            for g in GRID_KEYS.values()
        ],
        "plugin_errors": [
            {"group": e.group, "name": e.name, "source": e.source, "error": e.error}
            for e in plugin_errors()
        ],
    }
