"""Method-aware grid expansion with stable trial ids."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from dualtune.core.catalog import METHODS

if TYPE_CHECKING:
    from dualtune.core.spec.sweep import SweepSpec


def trial_id(method: str, params: Mapping[str, float | int]) -> str:
    """``{method}-{hash}``: depends on the method and its parameter values only, not on the
    trial's position, so re-expanding (or reordering the grid) gives the same ids."""
    canonical = json.dumps(
        {"method": method, "params": {k: repr(v) for k, v in sorted(params.items())}},
        sort_keys=True,
        separators=(",", ":"),
    )
    return f"{method}-{hashlib.sha1(canonical.encode()).hexdigest()[:10]}"


def method_keys(spec: SweepSpec, method: str) -> list[str]:
    """The grid keys a method reads that the grid sets, in the catalog's order."""
    reads = METHODS[method].keys_for(uses_epsilon=spec.constraint.uses_epsilon)
    return [k for k in spec.grid.present() if k in reads]


def method_points(spec: SweepSpec, method: str) -> list[dict[str, float | int]]:
    """The distinct grid points a method sees: the product over the keys it reads."""
    grid = spec.grid.present()
    keys = method_keys(spec, method)
    points: list[dict[str, float | int]] = []
    seen: set[tuple[float | int, ...]] = set()
    for combo in itertools.product(*(grid[k] for k in keys)):
        if combo not in seen:
            seen.add(combo)
            points.append(dict(zip(keys, combo, strict=True)))
    return points


def count_trials(spec: SweepSpec) -> int:
    """How many trials the expansion makes, by arithmetic (instant for any grid): per
    method the product of the sizes of the axes it reads. The grid refuses duplicate values
    on an axis, so every combination is a distinct point and this is exactly
    ``sum(len(method_points(spec, m)) for m in spec.methods)``."""
    grid = spec.grid.present()
    return sum(math.prod(len(grid[k]) for k in method_keys(spec, m)) for m in spec.methods)
