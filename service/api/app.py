"""``create_app(settings, launcher)``: the service, with its reconciler and the launcher's
health check in the background."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from dualtune.service.api.errors import install_error_handlers
from dualtune.service.api.metrics import ServiceMetrics
from dualtune.service.api.middleware import BodyLimit, RequestMetrics
from dualtune.service.api.routes import meta, sweeps, worker
from dualtune.service.api.tenant_cache import TenantCache
from dualtune.service.db.engine import make_engine
from dualtune.service.db.migrate import SchemaState, check_schema
from dualtune.service.db.repository import Repository
from dualtune.service.errors import Unavailable
from dualtune.service.launcher_health import LauncherHealthMonitor
from dualtune.service.launchers import FakeLauncher, Launcher, LocalLauncher, RayJobsLauncher
from dualtune.service.reconciler import Reconciler, lease_owner
from dualtune.service.service_log import log_to_stderr
from dualtune.service.settings import Settings


def make_launcher(settings: Settings) -> Launcher:
    if settings.launcher == "ray":
        if not settings.ray_address:
            raise ValueError(
                "DUALTUNE_LAUNCHER=ray needs DUALTUNE_RAY_ADDRESS (the Jobs API, http://HEAD:8265)"
            )
        if not settings.mlflow_tracking_uri:
            # The default store is a file in this service's data dir, which a driver on a Ray
            # node would not see: it would log to a store of its own and the sweep would
            # "succeed" with its runs where nobody looks (found by the chart-as-processes test).
            raise ValueError(
                "DUALTUNE_LAUNCHER=ray needs DUALTUNE_MLFLOW_TRACKING_URI (a tracking server "
                "or database every Ray node reaches, e.g. http://mlflow:5000): the default, "
                "a SQLite file in DUALTUNE_DATA_DIR, is this machine's alone"
            )
        return RayJobsLauncher(settings.ray_address, token=settings.ray_auth_token)
    if settings.launcher == "fake":
        return FakeLauncher()
    return LocalLauncher(
        log_dir=Path(settings.data_dir) / "logs", data_dir=Path(settings.data_dir)
    )


def create_app(
    settings: Settings | None = None,
    launcher: Launcher | None = None,
    *,
    engine: Engine | None = None,
    reconcile: bool = True,
) -> FastAPI:
    """The service. Refuses to start (``SchemaOutOfDate``) on a database whose schema this
    code cannot run on (behind it, or more than one revision ahead). ``reconcile=False``
    leaves the reconciler to the caller (tests step it)."""
    settings = settings or Settings()
    own_engine = engine is None
    engine = engine or make_engine(settings.resolved_database_url())
    try:
        check_schema(engine)
    except Exception:
        if own_engine:
            engine.dispose()
        raise
    repo = Repository(engine)
    launcher = launcher or make_launcher(settings)
    metrics = ServiceMetrics(repo)
    reconciler = Reconciler(
        repo,
        launcher,
        service_url=settings.resolved_service_url(),
        tracking_uri=settings.resolved_tracking_uri(),
        owner=lease_owner(settings.replica_id),
        lease_s=settings.lease_s,
        max_launches=settings.max_relaunches,
        metrics=metrics,
        driver_env={"DUALTUNE_DATA_DIR": settings.driver_data_dir}
        if settings.driver_data_dir
        else {},
    )
    launcher_health = LauncherHealthMonitor(
        launcher,
        timeout_s=settings.launcher_check_timeout_s,
        on_result=lambda up: metrics.launcher_up.set(1 if up else 0),
    )
    stop = threading.Event()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        threads = [
            threading.Thread(
                target=launcher_health.run,
                args=(stop, settings.launcher_check_interval_s),
                name="dualtune-launcher-health",
                daemon=True,
            )
        ]
        if reconcile:
            threads.append(
                threading.Thread(
                    target=reconciler.run,
                    args=(stop, settings.reconcile_interval_s),
                    name="dualtune-reconciler",
                    daemon=True,
                )
            )
        for thread in threads:
            thread.start()
        yield
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

    app = FastAPI(
        title="dualtune",
        version="0.1.0",
        summary="Constrained-learning sweeps on Ray Tune with MLflow tracking.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.repo = repo
    app.state.tenants = TenantCache(repo)
    app.state.launcher = launcher
    app.state.metrics = metrics
    app.state.reconciler = reconciler
    app.state.launcher_health = launcher_health

    def check_ready() -> SchemaState:
        """The database answers and this code runs on its schema. Not the launcher: its
        health is in /healthz and /metrics (a slow Ray head must not unready the API)."""
        repo.ping()
        try:
            return check_schema(engine)
        except SQLAlchemyError as exc:
            raise Unavailable(f"the database does not answer: {str(exc).splitlines()[0]}") from exc

    app.state.check_ready = check_ready
    install_error_handlers(app)
    app.include_router(sweeps.router)
    app.include_router(worker.router)
    app.include_router(meta.router)

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics)
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (several worker processes): settings from the
    environment; each worker process logs as ``serve`` does."""
    log_to_stderr()
    return create_app(Settings())
