"""MLflow tracking laid out as ARCHITECTURE §3.5, resilient to tracking-server outages."""

from worker.tracking.resilient import ResilientClient, tracking_uri_from_env
from worker.tracking.sweep_run import ensure_experiment, ensure_parent_run, log_sweep_report
from worker.tracking.trial_run import LoggingSummary, TrialRunLogger

__all__ = [
    "LoggingSummary",
    "ResilientClient",
    "TrialRunLogger",
    "ensure_experiment",
    "ensure_parent_run",
    "log_sweep_report",
    "tracking_uri_from_env",
]
