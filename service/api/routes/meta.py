"""Catalog, health, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dualtune.service.api.deps import CurrentTenant
from dualtune.service.api.schemas import CatalogPublic, ErrorPublic
from dualtune.service.usecases.catalog import catalog

router = APIRouter()


@router.get("/api/v1/catalog", tags=["catalog"], responses={401: {"model": ErrorPublic}})
def get_catalog(tenant: CurrentTenant) -> CatalogPublic:
    del tenant
    return CatalogPublic.model_validate(catalog())


@router.get("/healthz", tags=["health"])
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", tags=["health"], responses={503: {"model": ErrorPublic}})
def readyz(request: Request) -> dict[str, str]:
    request.app.state.check_ready()
    return {"status": "ready"}


@router.get("/metrics", tags=["health"], response_class=Response)
def metrics(request: Request) -> Response:
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )
