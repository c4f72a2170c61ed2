"""Request dependencies: the repository, the caller's tenant, the driver's token."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from dualtune.service.api.metrics import ServiceMetrics
from dualtune.service.api.tenant_cache import TenantCache
from dualtune.service.db.repository import Repository
from dualtune.service.errors import Unauthorized
from dualtune.service.records import Tenant
from dualtune.service.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="a tenant token (`dualtune token create`)")


# Dependencies that do no I/O are ``async``: FastAPI runs sync ones in the thread pool, a
# hop per dependency per request.
async def _repo(request: Request) -> Repository:
    repo: Repository = request.app.state.repo
    return repo


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _metrics(request: Request) -> ServiceMetrics:
    metrics: ServiceMetrics = request.app.state.metrics
    return metrics


def _token(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or not credentials.credentials:
        raise Unauthorized(
            "missing bearer token: send `Authorization: Bearer <token>` "
            "(create one with `dualtune token create --tenant NAME`)"
        )
    return credentials.credentials


async def _tenant(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Tenant:
    cache: TenantCache = request.app.state.tenants
    return await cache.tenant_for(_token(credentials))


async def _worker_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    return _token(credentials)


SWEEP_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
"""The ids the service issues (``sw-`` and 12 hex digits) fit; so do the ids tests and older
versions gave. Anything else (a NUL, a slash, 10 kB of junk) is refused before the
database sees it (Postgres refuses NUL in text)."""

Repo = Annotated[Repository, Depends(_repo)]
SweepId = Annotated[
    str,
    Path(
        pattern=SWEEP_ID_PATTERN,
        max_length=40,
        description="a sweep id as `POST /sweeps` answers it (sw-…)",
    ),
]
CurrentTenant = Annotated[Tenant, Depends(_tenant)]
WorkerToken = Annotated[str, Depends(_worker_token)]
AppSettings = Annotated[Settings, Depends(_settings)]
AppMetrics = Annotated[ServiceMetrics, Depends(_metrics)]
