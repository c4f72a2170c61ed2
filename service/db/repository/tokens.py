"""Tenants and their bearer tokens (stored as SHA-256 hashes only)."""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from dualtune.service.db.repository.unit import UnitOfWork, aware, utcnow
from dualtune.service.db.rows import TenantRow, TokenRow
from dualtune.service.errors import Conflict, Unauthorized
from dualtune.service.records import Tenant


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore(UnitOfWork):
    def create_token(self, tenant_name: str, token: str) -> Tenant:
        """Store ``token`` (its hash only) for ``tenant_name``, creating the tenant if new."""
        for _ in range(2):  # a concurrent first token for the same tenant: read it again
            try:
                with self._unit() as s:
                    tenant = s.scalar(select(TenantRow).where(TenantRow.name == tenant_name))
                    if tenant is None:
                        tenant = TenantRow(name=tenant_name, created_at=utcnow())
                        s.add(tenant)
                        s.flush()
                    s.add(
                        TokenRow(
                            tenant_pk=tenant.pk,
                            token_hash=hash_token(token),
                            prefix=token[:12],
                            created_at=utcnow(),
                        )
                    )
                    return Tenant(tenant.pk, tenant.name)
            except IntegrityError:
                continue
        raise Conflict(f"could not create a token for tenant {tenant_name!r}; try again")

    def list_tokens(self, tenant_name: str) -> list[tuple[str, datetime]]:
        """The tenant's tokens as (prefix, created) — the prefix is all that is shown."""
        with self._unit() as s:
            rows = s.execute(
                select(TokenRow.prefix, TokenRow.created_at)
                .join(TenantRow, TenantRow.pk == TokenRow.tenant_pk)
                .where(TenantRow.name == tenant_name)
                .order_by(TokenRow.pk)
            )
            return [(prefix, aware(created) or created) for prefix, created in rows]

    def revoke_token(self, prefix: str) -> int:
        """Delete the token with this prefix; refuses an empty or ambiguous prefix. The prefix
        is matched literally: ``_`` and ``%`` (token characters) are not LIKE wildcards."""
        if not prefix:
            raise Conflict("give the start of the token to revoke (as `token list` shows)")
        with self._unit() as s:
            found = list(
                s.scalars(
                    select(TokenRow).where(TokenRow.prefix.startswith(prefix, autoescape=True))
                )
            )
            if len(found) > 1:
                raise Conflict(f"{len(found)} tokens start with {prefix!r}; give more of it")
            for row in found:
                s.delete(row)
            return len(found)

    def tenant_for_token(self, token: str) -> Tenant:
        with self._unit() as s:
            row = s.execute(
                select(TenantRow.pk, TenantRow.name)
                .join(TokenRow, TokenRow.tenant_pk == TenantRow.pk)
                .where(TokenRow.token_hash == hash_token(token))
            ).first()
        if row is None:
            raise Unauthorized("unknown token; create one with `dualtune token create --tenant T`")
        return Tenant(row.pk, row.name)
