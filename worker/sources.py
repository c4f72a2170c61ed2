"""Where a driver gets its sweep: a spec file now, the service later (one small interface)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dualtune.core.spec import SweepSpec, load_spec


@dataclass(frozen=True)
class SweepDefinition:
    sweep_id: str
    spec: SweepSpec


class SweepSource(Protocol):
    def load(self) -> SweepDefinition:
        """The sweep to run."""
        ...


def spec_sweep_id(spec: SweepSpec) -> str:
    """A stable id for a spec: the same spec always names the same sweep, so a driver started
    again on it finds and resumes the earlier run."""
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return f"{spec.name[:40]}-{hashlib.sha1(canonical.encode()).hexdigest()[:10]}"


@dataclass(frozen=True)
class SpecFileSource:
    path: Path
    sweep_id: str | None = None

    def load(self) -> SweepDefinition:
        spec = load_spec(self.path)
        return SweepDefinition(self.sweep_id or spec_sweep_id(spec), spec)
