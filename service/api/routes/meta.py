"""Catalog, health, readiness and Prometheus metrics."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from dualtune.service.api.deps import CurrentTenant
from dualtune.service.api.schemas import CatalogPublic, ErrorPublic
from dualtune.service.usecases.catalog import catalog

router = APIRouter()


@router.get("/api/v1/catalog", tags=["catalog"], responses={401: {"model": ErrorPublic}})
def get_catalog(tenant: CurrentTenant) -> CatalogPublic:
    del tenant
    return CatalogPublic.model_validate(catalog())


class LauncherHealthPublic(BaseModel):
    name: str
    up: bool
    detail: str
    checked_at: datetime | None
    """When the background check last ended (null: not yet)."""


class HealthPublic(BaseModel):
    status: Literal["ok"]
    launcher: LauncherHealthPublic


class ReadyPublic(BaseModel):
    status: Literal["ready"]
    schema_revision: str
    """The database's revision: this code's, or the next one (an upgrade in progress)."""
    code_revision: str


@router.get("/healthz", tags=["health"])
def healthz(request: Request) -> HealthPublic:
    """The process answers. The launcher's state is the background check's last answer:
    detail for people and dashboards, never a reason to restart the process."""
    health = request.app.state.launcher_health.health()
    return HealthPublic(
        status="ok",
        launcher=LauncherHealthPublic(
            name=health.name, up=health.up, detail=health.detail, checked_at=health.checked_at
        ),
    )


@router.get("/readyz", tags=["health"], responses={503: {"model": ErrorPublic}})
def readyz(request: Request) -> ReadyPublic:
    """The database answers and this code runs on its schema (current, or one revision
    ahead while an upgrade rolls out)."""
    state = request.app.state.check_ready()
    return ReadyPublic(
        status="ready", schema_revision=state.current or "", code_revision=state.head
    )


@router.get("/metrics", tags=["health"], response_class=Response)
def metrics(request: Request) -> Response:
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )
