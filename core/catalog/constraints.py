"""What a constraint kind is to the catalog: what it constrains and how many multipliers it
needs. Kinds register through the ``dualtune.constraints`` entry point group
(``dualtune.core.catalog.registry``); the built-in ones are in ``builtin_constraints``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConstraintKindInfo:
    name: str
    summary: str
    multipliers: str
    """One multiplier per what (sample, group, class, layer)."""
    needs_classification: bool = False
    needs_group_attribute: bool = False
    allows_equality: bool = False
    extra_metrics: tuple[str, ...] = ()
    """Split metrics the kind reports beyond §3.4 (e.g. ``descent_frac``)."""
    generic: bool = True
    """Applies to any task that meets the flags above; a task-specific kind applies only to
    the tasks that list it in ``TaskInfo.constraint_kinds``."""
