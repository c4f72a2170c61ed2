"""Addresses of a sweep in the MLflow UI, shared by the worker (which writes the view) and
the service (which hands out the links); plain strings, no MLflow import.

MLflow's UI (3.x) opens an experiment in the GenAI overview unless the workflow type is
asked for in the address (or was picked once in that browser): it ignores the
``mlflow.experimentKind`` tag. The runs table shows the "shared view" stored in the
experiment tag ``mlflow.sharedViewState.<key>`` when the address names the key.
"""

from __future__ import annotations

VIEW_KEY = "dualtune"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
WORKFLOW_QUERY = "workflowType=machine_learning"
VIEW_QUERY = f"viewStateShareKey={VIEW_KEY}&{WORKFLOW_QUERY}"
"""The query of the experiment page that opens the runs table in the sweep's view."""


def experiment_url(ui: str | None, experiment_id: str | None) -> str | None:
    """The sweep's runs table in its view, or ``None`` without a UI address or experiment."""
    if not (ui and experiment_id):
        return None
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs?{VIEW_QUERY}"


def run_url(ui: str | None, experiment_id: str | None, run_id: str | None) -> str | None:
    """One run's page, opened as model training."""
    if not (ui and experiment_id and run_id):
        return None
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{WORKFLOW_QUERY}"
