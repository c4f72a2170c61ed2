"""What a constraint kind is to the catalog: its spec section, what it constrains, how many
multipliers it needs and which methods fit it. Kinds register through the
``dualtune.constraints`` entry point group (``dualtune.core.catalog.registry``); the built-in
ones are in ``builtin_constraints``, registered the same way.

A kind is one torch-free ``ConstraintKindInfo`` naming two classes: its ``ConstraintParams``
(the spec's ``constraint:`` section, validated by the service) and its builder, a
``dualtune.ConstraintKind`` that computes the constraint values on a batch, imported only
where trials run. The engine supplies everything else (multipliers, methods, dual
optimizers, schemes, packing, resume, the ``constraint/*`` and ``dual/*`` metrics).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict

from dualtune.core.catalog.tasks import TaskInfo


class ConstraintParams(BaseModel):
    """Base of every kind's ``constraint:`` section: ``kind`` names the kind (a subclass
    narrows it, ``kind: Literal["group_fnr"]``) and unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str

    @property
    def uses_epsilon(self) -> bool:
        """Whether ε is a swept grid key of this constraint, multiplying the trials of the
        methods that read it; false for a target fixed by the kind (an equality to 0)."""
        return True

    @property
    def front_metric(self) -> str | None:
        """The split metric (§3.4, without its split: ``dp_gap``, ``loss_max``) that measures
        this constraint, lower being better: the report's Pareto fronts put it against the
        selection metric when ``selection.subject_to`` names none (``dualtune.core.pareto``).
        ``None``: the fronts use ``constraint/violation_max``."""
        return None

    def problems(
        self,
        task: TaskInfo,
        task_params: Mapping[str, Any],
        epsilon: tuple[float, ...] | None,
    ) -> list[tuple[str, str]]:
        """What else in the spec does not fit this constraint, as ``(field, message)`` pairs
        with fields relative to the spec root (``task.params.model``, ``grid.epsilon``).

        Called for a registered task that supports the kind, with the task's validated
        parameters and the grid's ε values (``None`` when the grid sets none).
        """
        del task, task_params, epsilon
        return []


@dataclass(frozen=True)
class ConstraintKindInfo:
    name: str
    summary: str
    multipliers: str
    """One multiplier per what (sample, group, class, layer)."""
    params: type[ConstraintParams]
    """The spec's ``constraint:`` section of this kind."""
    builder: str
    """``module:Class`` of the ``dualtune.ConstraintKind`` subclass, imported lazily."""
    per_sample: bool = False
    """One multiplier per training sample, observed by index (``sample_loss``): the trial
    reports them per sample (``TrialResult.per_sample["multiplier"]``, per-sample tables)."""
    needs_classification: bool = False
    needs_group_attribute: bool = False
    """The task must have group attributes; ``params`` then has an ``attribute: str``."""
    allows_equality: bool = False
    extra_metrics: tuple[str, ...] = ()
    """Split metrics the kind reports beyond the common ones of §3.4 (``descent_frac``)."""
    generic: bool = True
    """Applies to any task that meets the flags above; a task-specific kind applies only to
    the tasks that list it in ``TaskInfo.constraint_kinds`` or
    ``extra_constraint_kinds``."""
    epsilon_in_kind: bool = False
    """The builder folds ε into the constraint itself (``layer_descent``): one kind serves a
    whole pack, so the members of a pack must share ε."""
    methods: tuple[str, ...] | None = None
    """The methods that apply; ``None``: every method that fits (``cserm`` only on
    per-sample kinds, ``sal`` never on them)."""
    packable: bool = True
    """False when the builder is not vmap-safe: its trials always train unpacked."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a constraint kind needs a name")
        if not (isinstance(self.params, type) and issubclass(self.params, ConstraintParams)):
            raise ValueError(
                f"constraint kind {self.name!r}: params must be a dualtune.ConstraintParams "
                f"subclass, got {self.params!r}"
            )
        module, _, attribute = self.builder.partition(":")
        if not module or not attribute:
            raise ValueError(
                f"constraint kind {self.name!r}: builder must be 'module:Class', "
                f"got {self.builder!r}"
            )
        kind = self.params.model_fields["kind"].annotation
        if get_origin(kind) is Literal and self.name not in get_args(kind):
            raise ValueError(
                f"constraint kind {self.name!r}: {self.params.__name__}.kind accepts "
                f"{', '.join(map(repr, get_args(kind)))}, not {self.name!r}"
            )
        if self.needs_group_attribute and "attribute" not in self.params.model_fields:
            raise ValueError(
                f"constraint kind {self.name!r} needs a group attribute: "
                f"{self.params.__name__} must have an `attribute: str` field"
            )
        if self.methods is not None and not self.methods:
            raise ValueError(
                f"constraint kind {self.name!r}: methods is empty; give None for every "
                "method that fits"
            )
