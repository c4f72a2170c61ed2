"""HTTP's side of the error tree: every error becomes JSON a person can act on."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from dualtune.core.spec.errors import FIELD_ERRORS
from dualtune.service.api.schemas import error_message
from dualtune.service.errors import ServiceError

log = logging.getLogger("dualtune.api")

_PATTERN_HINTS = {
    "sweep_id": "not a sweep id: use the id `POST /sweeps` answered (sw-…; letters, digits, "
    "'.', '_' and '-')",
    "cursor": "not a cursor this service issued; pass the next_cursor of the previous page, "
    "or leave it out for the first page",
    "Idempotency-Key": "use printable ASCII only (a UUID, say)",
}


def _shown(part: object) -> str:
    return str(part).replace("\x00", "\\u0000")


def _field(loc: tuple[object, ...] | list[object]) -> str:
    parts = [_shown(p) for p in loc if p != "[key]"]  # pydantic's marker of a mapping's key
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:] or parts
    return ".".join(parts)


def _items(exc: RequestValidationError) -> list[dict[str, str]]:
    """One ``{field, message}`` per problem; a validator's sub-field errors (a walk of a free
    mapping such as the spec) expand to their own paths (``spec.dual.lr``)."""
    items: list[dict[str, str]] = []
    for e in exc.errors():
        field = _field(e.get("loc", ()))
        ctx = e.get("ctx") or {}
        if e.get("type") == FIELD_ERRORS and isinstance(ctx.get("items"), list):
            for sub, message in ctx["items"]:
                path = ".".join(p for p in (field, _shown(sub)) if p)
                items.append({"field": path, "message": str(message)})
            continue
        message = error_message(e)
        if e.get("type") == "string_pattern_mismatch" and field in _PATTERN_HINTS:
            message = _PATTERN_HINTS[field]
        items.append({"field": field, "message": message})
    return items


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        del request
        body: dict[str, object] = {"detail": exc.message}
        if "errors" in exc.details:
            body["errors"] = exc.details["errors"]
        elif "field" in exc.details:
            body["errors"] = [{"field": exc.details["field"], "message": exc.message}]
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(body, status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        del request
        errors = _items(exc)
        detail = "invalid request: " + "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return JSONResponse({"detail": detail, "errors": errors}, status_code=422)

    @app.exception_handler(HTTPException)
    def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        del request
        return JSONResponse(
            {"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"detail": f"internal error ({type(exc).__name__}); the service log has the details"},
            status_code=500,
        )
