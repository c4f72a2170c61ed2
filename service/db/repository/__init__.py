"""The repository: every read and write of the service's database, one unit of work each.

It returns frozen records (never rows), owns commit and rollback, and maps database failures
into the service's error tree once (``unit``). One module per aggregate, each one story:
``tokens`` (tenants and bearer tokens), ``sweeps`` (the tenant's sweeps and trials),
``driver_side`` (what a driver reads and reports), ``launches`` (leases and launches).
"""

from __future__ import annotations

from dualtune.service.db.repository.driver_side import DriverSide
from dualtune.service.db.repository.launches import LaunchStore
from dualtune.service.db.repository.sweeps import SweepStore
from dualtune.service.db.repository.tokens import TokenStore, hash_token
from dualtune.service.db.repository.unit import decode_cursor, encode_cursor, utcnow


class Repository(TokenStore, SweepStore, DriverSide, LaunchStore):
    """The service's one repository: the aggregates' stores on one engine."""


__all__ = ["Repository", "decode_cursor", "encode_cursor", "hash_token", "utcnow"]
