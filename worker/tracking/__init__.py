"""MLflow tracking laid out as ARCHITECTURE §3.5, resilient to tracking-server outages."""

from dualtune.worker.tracking.resilient import ResilientClient, tracking_uri_from_env
from dualtune.worker.tracking.sweep_run import (
    ensure_experiment,
    ensure_parent_run,
    log_sweep_report,
)
from dualtune.worker.tracking.trial_run import LoggingSummary, TrialRunLogger

__all__ = [
    "LoggingSummary",
    "ResilientClient",
    "TrialRunLogger",
    "ensure_experiment",
    "ensure_parent_run",
    "log_sweep_report",
    "tracking_uri_from_env",
]
