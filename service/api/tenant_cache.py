"""Known tokens → tenant, remembered for a few seconds so that a client polling its sweeps
costs one database read per interval, not one per request. Unknown tokens are not
remembered (a new token works at once)."""

from __future__ import annotations

import hashlib
import time

from starlette.concurrency import run_in_threadpool

from dualtune.service.db.repository import Repository
from dualtune.service.records import Tenant


class TenantCache:
    def __init__(self, repo: Repository, ttl_s: float = 10.0, max_entries: int = 10_000) -> None:
        self.repo = repo
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._known: dict[str, tuple[Tenant, float]] = {}

    async def tenant_for(self, token: str) -> Tenant:
        key = hashlib.sha256(token.encode()).hexdigest()  # plaintext never kept in memory
        hit = self._known.get(key)
        now = time.monotonic()
        if hit is not None and hit[1] > now:
            return hit[0]
        tenant = await run_in_threadpool(self.repo.tenant_for_token, token)
        if len(self._known) >= self.max_entries:
            self._known.clear()
        self._known[key] = (tenant, now + self.ttl_s)
        return tenant
