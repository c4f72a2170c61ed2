"""A trial's figures: ``plots/loss_cdf.png``, ``plots/multipliers.png`` and, for image
tasks, ``plots/hardest.png``.

Drawing them is most of what tracking costs a trial (about 0.3 s a run against a few
milliseconds for its metrics), and in a sweep nobody opens most of them. So they are drawn
where someone will look (``logging.plots``): ``best``, the default, has the driver draw
each method's best trial after the sweep (``log_trial_figures``); ``all`` has every trial
draw its own, on its logger's file thread (``TrialRunLogger.log_final(figures=True)``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient

from dualtune.core.engine.hardest import HardestSamples
from dualtune.worker.tracking import plots
from dualtune.worker.tracking.resilient import ResilientClient, describe_error

PLOTS_DIR = "plots"
"""The artifact folder of a run's figures."""


def render_trial_figures(
    directory: Path,
    per_sample: dict[str, np.ndarray],
    *,
    multipliers: np.ndarray | None,
    hardest: HardestSamples | None,
    epsilon: float | None,
    title: str,
) -> list[Path]:
    """Draw the trial's figures into ``directory`` (created if missing); returns their
    paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [
        plots.loss_cdf(per_sample, epsilon, directory / "loss_cdf.png", title),
        plots.multipliers(per_sample, multipliers, directory / "multipliers.png", title),
    ]
    if hardest is not None:
        paths.append(plots.hardest(hardest, directory / "hardest.png", title))
    return paths


def log_trial_figures(
    tracking_uri: str,
    run_id: str,
    per_sample: dict[str, np.ndarray],
    *,
    multipliers: np.ndarray | None,
    hardest: HardestSamples | None,
    epsilon: float | None,
    title: str,
) -> str:
    """Draw a finished trial's figures and log them under ``plots/`` of its run (the
    driver, for each method's best trial). Returns what could not be logged, ``''`` when
    everything was; never raises for a drawing or tracking failure."""
    with tempfile.TemporaryDirectory(prefix="dualtune-figures-") as tmp:
        directory = Path(tmp) / PLOTS_DIR
        try:
            render_trial_figures(
                directory,
                per_sample,
                multipliers=multipliers,
                hardest=hardest,
                epsilon=epsilon,
                title=title,
            )
        except Exception as exc:  # a figure that cannot be drawn must not fail the sweep
            return f"figures of run {run_id} not drawn: {describe_error(exc)}"
        client = ResilientClient(tracking_uri)

        def upload(c: MlflowClient) -> None:
            c.log_artifacts(run_id, str(directory), PLOTS_DIR)

        ok, _ = client.call(upload)
        if ok:
            return ""
        return f"figures of run {run_id} not logged; last error: {client.last_error or 'unknown'}"
