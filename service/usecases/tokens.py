"""Tenant tokens."""

from __future__ import annotations

from datetime import datetime

from dualtune.service.auth import new_tenant_token
from dualtune.service.db.repository import Repository
from dualtune.service.errors import InvalidInput, NotFound
from dualtune.service.records import Tenant


def create_token(repo: Repository, tenant_name: str) -> tuple[Tenant, str]:
    """A new token for ``tenant_name`` (created if new); the plaintext is returned once."""
    name = tenant_name.strip()
    if not name or len(name) > 100:
        raise InvalidInput("tenant: give a name of 1 to 100 characters", field="tenant")
    token = new_tenant_token()
    return repo.create_token(name, token), token


def list_tokens(repo: Repository, tenant_name: str) -> list[tuple[str, datetime]]:
    return repo.list_tokens(tenant_name)


def revoke_token(repo: Repository, prefix: str) -> None:
    if len(prefix) < 6:
        raise InvalidInput("prefix: give at least 6 characters of the token", field="prefix")
    if repo.revoke_token(prefix) == 0:
        raise NotFound(f"no token starts with {prefix!r}; see `dualtune token list --tenant T`")
