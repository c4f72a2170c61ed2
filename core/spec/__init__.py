"""The sweep spec (ARCHITECTURE §3.1): pure pydantic, importable without torch."""

from dualtune.core.spec.errors import SpecError
from dualtune.core.spec.loading import load_spec
from dualtune.core.spec.metric_names import METRIC_NAMES, metric_names_for
from dualtune.core.spec.sections import (
    Bound,
    ClassLossConstraint,
    Dual,
    Grid,
    GroupRateConstraint,
    Limits,
    Logging,
    OrthogonalityConstraint,
    PrimalOptimizer,
    Resources,
    SampleLossConstraint,
    Selection,
    TaskRef,
    Train,
    WeightNormConstraint,
)
from dualtune.core.spec.sweep import SweepSpec
from dualtune.core.spec.trial import TrialConfig

__all__ = [
    "METRIC_NAMES",
    "Bound",
    "ClassLossConstraint",
    "Dual",
    "Grid",
    "GroupRateConstraint",
    "Limits",
    "Logging",
    "OrthogonalityConstraint",
    "PrimalOptimizer",
    "Resources",
    "SampleLossConstraint",
    "Selection",
    "SpecError",
    "SweepSpec",
    "TaskRef",
    "Train",
    "TrialConfig",
    "WeightNormConstraint",
    "load_spec",
    "metric_names_for",
]
