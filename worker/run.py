"""``dualtune.run_sweep``: ``dualtune run`` from Python (ARCHITECTURE §3.7, §3.8).

One sweep on Ray in this process (a local runtime of its own by default) with MLflow, through
the same driver as ``dualtune run`` and the service's drivers; no service involved. Tasks and
constraint kinds registered in this process (``dualtune.register_task``) run like installed
ones.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dualtune.core.spec import SweepSpec, load_spec
from dualtune.worker.sources import spec_sweep_id

if TYPE_CHECKING:
    from dualtune.worker.driver import SweepResult


def run_sweep(
    spec: SweepSpec | Mapping[str, Any] | str | Path,
    *,
    sweep_id: str | None = None,
    storage_path: str | Path | None = None,
    tracking_uri: str | None = None,
    ray_address: str | None = None,
    show_progress: bool = True,
) -> SweepResult:
    """Run (or resume) a sweep to the end and return its trials and ``.report``.

    Args:
        spec: a ``SweepSpec``, its mapping, its YAML/JSON text or a file's path.
        sweep_id: default: derived from the spec, so running the same spec again with the
            same storage resumes it (finished trials are not re-run).
        storage_path: Tune's storage (default: ``$DUALTUNE_DATA_DIR/tune``).
        tracking_uri: MLflow's (default: ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``
            in the working directory).
        ray_address: a Ray cluster to join (default: ``DUALTUNE_RAY_ADDRESS``, else a local
            runtime; a Ray already initialised in this process is used as it is).
        show_progress: Tune's progress table.

    Raises:
        SpecError: the spec is invalid (before Ray starts).
    """
    loaded = spec if isinstance(spec, SweepSpec) else load_spec(spec)
    # Imported here: Ray, torch and MLflow take seconds, not worth it for a bad spec.
    from dualtune.worker.driver import run_sweep as drive
    from dualtune.worker.tracking import tracking_uri_from_env

    return drive(
        loaded,
        sweep_id=sweep_id or spec_sweep_id(loaded),
        storage_path=Path(storage_path) if storage_path is not None else None,
        tracking_uri=tracking_uri or tracking_uri_from_env(),
        ray_address=ray_address or os.environ.get("DUALTUNE_RAY_ADDRESS") or None,
        show_progress=show_progress,
    )


__all__ = ["run_sweep"]
