"""Service settings from ``DUALTUNE_*`` environment variables (ARCHITECTURE §3.7).

Built by ``create_app()`` and the CLI, never at import: tests and the embedded stack pass
their own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DUALTUNE_", extra="ignore")

    data_dir: Path = Field(default_factory=lambda: Path.home() / ".dualtune")
    database_url: str | None = None
    """Default: SQLite ``{data_dir}/dualtune.db`` (WAL mode)."""
    launcher: Literal["local", "ray", "fake"] = "local"
    """``fake`` runs no driver at all: only with ``testing`` (``DUALTUNE_TESTING=1``)."""
    testing: bool = False
    """Allows what only tests may use (the ``fake`` launcher)."""
    ray_address: str | None = None
    """For the ``ray`` launcher: the Ray dashboard / Jobs API address (``http://host:8265``)."""
    ray_auth_token: str | None = None
    """Ray's token for clusters with token auth (default: ``RAY_AUTH_TOKEN``, else Ray's
    token file)."""
    driver_data_dir: str | None = None
    """Where drivers keep Tune state (``DUALTUNE_DATA_DIR`` of the driver). For the ``ray``
    launcher, a path every Ray node sees (a shared volume); default: the driver's own."""
    mlflow_tracking_uri: str | None = None
    """Default: SQLite ``{data_dir}/mlflow.db`` (artifacts in ``{data_dir}/mlartifacts``)."""
    mlflow_ui_url: str | None = None
    service_url: str | None = None
    """How drivers reach this service (events, their sweep). Default: ``http://127.0.0.1:{port}``."""
    port: int = 8000
    reconcile_interval_s: float = 2.0
    lease_s: float = 30.0
    """A replica's claim on a sweep: another replica takes it over after this long silent."""
    max_relaunches: int = 3
    """Driver launches of one sweep generation before the sweep is marked failed."""
    replica_id: str | None = None
    max_body_bytes: int = 8 * 1024 * 1024
    """Larger request bodies get a 413."""
    max_trials: int = Field(default=10_000, ge=1)
    """The most trials one sweep may expand to; checked before the grid is expanded."""
    launcher_check_interval_s: float = Field(default=10.0, gt=0)
    """How often a background thread asks the launcher whether it can launch (``/healthz``
    and ``dualtune_launcher_up`` show the answer; readiness never waits on it)."""
    launcher_check_timeout_s: float = Field(default=5.0, gt=0)
    """How long one such check may take before the launcher counts as down."""

    @model_validator(mode="after")
    def _fake_only_in_tests(self) -> Settings:
        if self.launcher == "fake" and not self.testing:
            raise ValueError(
                "DUALTUNE_LAUNCHER=fake launches no driver (sweeps would never run): it is for "
                "tests and needs DUALTUNE_TESTING=1 as well; use local or ray"
            )
        return self

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'dualtune.db'}"

    def resolved_tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.data_dir / 'mlflow.db'}"

    def resolved_service_url(self) -> str:
        return (self.service_url or f"http://127.0.0.1:{self.port}").rstrip("/")
