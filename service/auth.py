"""Bearer tokens: opaque, prefixed, 256 random bits; only their hashes are stored."""

from __future__ import annotations

import secrets

TENANT_PREFIX = "dt_"
WORKER_PREFIX = "dtw_"


def new_tenant_token() -> str:
    return TENANT_PREFIX + secrets.token_urlsafe(32)


def new_worker_token() -> str:
    return WORKER_PREFIX + secrets.token_urlsafe(32)


def new_sweep_id() -> str:
    return "sw-" + secrets.token_hex(6)
