"""Tenant tokens."""

from __future__ import annotations

from service.auth import new_tenant_token
from service.db.repository import Repository
from service.errors import InvalidInput
from service.records import Tenant


def create_token(repo: Repository, tenant_name: str) -> tuple[Tenant, str]:
    """A new token for ``tenant_name`` (created if new); the plaintext is returned once."""
    name = tenant_name.strip()
    if not name or len(name) > 100:
        raise InvalidInput("tenant: give a name of 1 to 100 characters", field="tenant")
    token = new_tenant_token()
    return repo.create_token(name, token), token
