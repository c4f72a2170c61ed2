"""``/api/v1/sweeps``: submit, list, read, cancel, retry, report."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.responses import PlainTextResponse

from dualtune.service.api.deps import AppSettings, CurrentTenant, Repo, SweepId
from dualtune.service.api.schemas import (
    ErrorPublic,
    ReportPublic,
    SweepCreate,
    SweepPage,
    SweepPublic,
    SweepStatus,
    TrialPage,
    TrialStatus,
    sweep_public,
    trial_public,
)
from dualtune.service.usecases import sweeps

router = APIRouter(
    prefix="/api/v1/sweeps",
    tags=["sweeps"],
    responses={401: {"model": ErrorPublic}, 404: {"model": ErrorPublic}},
)
Limit = Annotated[int, Query(ge=1, le=1000, description="page size")]
Cursor = Annotated[
    str | None,
    Query(max_length=64, pattern=r"^[A-Za-z0-9_-]*$", description="next_cursor of the last page"),
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        pattern=r"^[\x20-\x7e]*$",
        description="any printable ASCII text (a UUID, say), at most 200 characters",
    ),
]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={409: {"model": ErrorPublic}, 422: {"model": ErrorPublic}},
)
def submit(
    body: SweepCreate,
    tenant: CurrentTenant,
    repo: Repo,
    settings: AppSettings,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> SweepPublic:
    sweep, created = sweeps.submit_sweep(
        repo, tenant, body.spec, idempotency_key, max_trials=settings.max_trials
    )
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return sweep_public(sweep, ui=settings.mlflow_ui_url)


@router.get("")
def list_sweeps(
    tenant: CurrentTenant,
    repo: Repo,
    settings: AppSettings,
    status: SweepStatus | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> SweepPage:
    page = sweeps.list_sweeps(repo, tenant, status=status, limit=limit, cursor=cursor)
    items = [sweep_public(s, ui=settings.mlflow_ui_url) for s in page.items]
    return SweepPage(items=items, next_cursor=page.next_cursor)


@router.get("/{sweep_id}")
def get_sweep(
    sweep_id: SweepId, tenant: CurrentTenant, repo: Repo, settings: AppSettings
) -> SweepPublic:
    sweep, best = sweeps.get_sweep(repo, tenant, sweep_id)
    return sweep_public(sweep, ui=settings.mlflow_ui_url, best=best)


@router.get("/{sweep_id}/trials")
def list_trials(
    sweep_id: SweepId,
    tenant: CurrentTenant,
    repo: Repo,
    settings: AppSettings,
    status: TrialStatus | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> TrialPage:
    page = sweeps.list_trials(repo, tenant, sweep_id, status=status, limit=limit, cursor=cursor)
    experiment = sweeps.experiment_of(repo, tenant, sweep_id) if settings.mlflow_ui_url else None
    items = [
        trial_public(t, ui=settings.mlflow_ui_url, experiment_id=experiment) for t in page.items
    ]
    return TrialPage(items=items, next_cursor=page.next_cursor)


@router.post(
    "/{sweep_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    responses={409: {"model": ErrorPublic}},
)
def cancel(
    sweep_id: SweepId, tenant: CurrentTenant, repo: Repo, settings: AppSettings
) -> SweepPublic:
    return sweep_public(sweeps.cancel_sweep(repo, tenant, sweep_id), ui=settings.mlflow_ui_url)


@router.post(
    "/{sweep_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    responses={409: {"model": ErrorPublic}},
)
def retry(
    sweep_id: SweepId, tenant: CurrentTenant, repo: Repo, settings: AppSettings
) -> SweepPublic:
    return sweep_public(sweeps.retry_sweep(repo, tenant, sweep_id), ui=settings.mlflow_ui_url)


@router.get("/{sweep_id}/report")
def report(sweep_id: SweepId, tenant: CurrentTenant, repo: Repo) -> ReportPublic:
    _, body = sweeps.sweep_report(repo, tenant, sweep_id)
    return ReportPublic.model_validate(body)


@router.get("/{sweep_id}/logs", response_class=PlainTextResponse)
def logs(
    sweep_id: SweepId,
    tenant: CurrentTenant,
    repo: Repo,
    request: Request,
    tail: Annotated[int, Query(ge=1, le=10000, description="last lines")] = 200,
) -> PlainTextResponse:
    """The sweep driver's output (its last launch), for when a sweep fails."""
    launcher = request.app.state.launcher
    return PlainTextResponse(sweeps.driver_logs(repo, launcher, tenant, sweep_id, tail))
