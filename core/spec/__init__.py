"""The sweep spec (ARCHITECTURE §3.1): pure pydantic, importable without torch."""

from dualtune.core.catalog.builtin_constraints import (
    ClassLossConstraint,
    GroupRateConstraint,
    InequalityConstraint,
    LayerDescentConstraint,
    OrthogonalityConstraint,
    PinnResidualConstraint,
    SampleLossConstraint,
    WeightNormConstraint,
)
from dualtune.core.catalog.constraints import ConstraintParams
from dualtune.core.spec.errors import SpecError
from dualtune.core.spec.hostile import hostile_values
from dualtune.core.spec.loading import load_spec
from dualtune.core.spec.metric_names import METRIC_NAMES, metric_names_for
from dualtune.core.spec.sections import (
    RESERVED_ENV_VARS,
    WORKER_TOKEN_ENV,
    Bound,
    Constraint,
    Dual,
    EarlyStopping,
    Grid,
    Limits,
    Logging,
    PrimalOptimizer,
    Resources,
    Runtime,
    Selection,
    TaskRef,
    Train,
    UnregisteredConstraint,
    unregistered_tasks_allowed,
)
from dualtune.core.spec.sweep import SweepSpec, trial_cap
from dualtune.core.spec.trial import TrialConfig

__all__ = [
    "METRIC_NAMES",
    "RESERVED_ENV_VARS",
    "WORKER_TOKEN_ENV",
    "Bound",
    "ClassLossConstraint",
    "Constraint",
    "ConstraintParams",
    "Dual",
    "EarlyStopping",
    "Grid",
    "GroupRateConstraint",
    "InequalityConstraint",
    "LayerDescentConstraint",
    "Limits",
    "Logging",
    "OrthogonalityConstraint",
    "PinnResidualConstraint",
    "PrimalOptimizer",
    "Resources",
    "Runtime",
    "SampleLossConstraint",
    "Selection",
    "SpecError",
    "SweepSpec",
    "TaskRef",
    "Train",
    "TrialConfig",
    "UnregisteredConstraint",
    "WeightNormConstraint",
    "hostile_values",
    "load_spec",
    "metric_names_for",
    "trial_cap",
    "unregistered_tasks_allowed",
]
