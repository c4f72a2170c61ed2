"""MLflow tracking laid out as ARCHITECTURE §3.5, resilient to tracking-server outages."""

from dualtune.worker.tracking.resilient import (
    ResilientClient,
    shared_client,
    tracking_uri_from_env,
)
from dualtune.worker.tracking.sweep_run import (
    ensure_experiment,
    ensure_parent_run,
    log_sweep_report,
)
from dualtune.worker.tracking.trial_figures import log_trial_figures
from dualtune.worker.tracking.trial_run import (
    NODE_ID_TAG,
    NODE_TAG,
    LoggingSummary,
    TrialRunLogger,
    run_name,
)

__all__ = [
    "NODE_ID_TAG",
    "NODE_TAG",
    "LoggingSummary",
    "ResilientClient",
    "TrialRunLogger",
    "ensure_experiment",
    "ensure_parent_run",
    "log_sweep_report",
    "log_trial_figures",
    "run_name",
    "shared_client",
    "tracking_uri_from_env",
]
