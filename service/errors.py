"""The service's one error tree. Each boundary maps into it once (DB in the repository,
launchers in each launcher) and HTTP maps out of it once (``api.errors``)."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """Base: ``message`` is what a person reads; ``status`` the HTTP status it maps to."""

    status = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidInput(ServiceError):
    status = 422


class Unauthorized(ServiceError):
    status = 401


class NotFound(ServiceError):
    status = 404


class Conflict(ServiceError):
    status = 409


class Unavailable(ServiceError):
    """The database or the launcher cannot be reached now; retry later."""

    status = 503


class SchemaOutOfDate(ServiceError):
    status = 503


class LauncherError(ServiceError):
    status = 502
