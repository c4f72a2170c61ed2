"""``create_app(settings, launcher)``: the service, with its reconciler in the background."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy import Engine

from dualtune.service.api.errors import install_error_handlers
from dualtune.service.api.metrics import ServiceMetrics
from dualtune.service.api.middleware import BodyLimit, RequestMetrics
from dualtune.service.api.routes import meta, sweeps, worker
from dualtune.service.api.tenant_cache import TenantCache
from dualtune.service.db.engine import make_engine
from dualtune.service.db.migrate import check_schema
from dualtune.service.db.repository import Repository
from dualtune.service.launchers import FakeLauncher, Launcher, LocalLauncher, RayJobsLauncher
from dualtune.service.reconciler import Reconciler, default_replica_id
from dualtune.service.settings import Settings


def make_launcher(settings: Settings) -> Launcher:
    if settings.launcher == "ray":
        if not settings.ray_address:
            raise ValueError(
                "DUALTUNE_LAUNCHER=ray needs DUALTUNE_RAY_ADDRESS (the Jobs API, http://HEAD:8265)"
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
    """The service. Refuses to start (``SchemaOutOfDate``) on a database whose schema is not
    the code's. ``reconcile=False`` leaves the reconciler to the caller (tests step it)."""
    settings = settings or Settings()
    engine = engine or make_engine(settings.resolved_database_url())
    check_schema(engine)
    repo = Repository(engine)
    launcher = launcher or make_launcher(settings)
    metrics = ServiceMetrics(repo)
    reconciler = Reconciler(
        repo,
        launcher,
        service_url=settings.resolved_service_url(),
        tracking_uri=settings.resolved_tracking_uri(),
        owner=settings.replica_id or default_replica_id(),
        lease_s=settings.lease_s,
        max_launches=settings.max_relaunches,
        metrics=metrics,
        driver_env={"DUALTUNE_DATA_DIR": settings.driver_data_dir}
        if settings.driver_data_dir
        else {},
    )
    stop = threading.Event()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        thread = None
        if reconcile:
            thread = threading.Thread(
                target=reconciler.run,
                args=(stop, settings.reconcile_interval_s),
                name="dualtune-reconciler",
                daemon=True,
            )
            thread.start()
        yield
        stop.set()
        if thread is not None:
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

    def check_ready() -> None:
        repo.ping()
        check_schema(engine)
        launcher.check_ready()

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
    environment."""
    return create_app(Settings())
