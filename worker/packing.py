"""Packing: which trials of a sweep the driver trains together, one Ray trial per pack.

Trials that differ only in per-member keys (``core.spec.packs``) are grouped; ``pack: off``
keeps every trial on its own, ``pack: N`` caps a pack at N members, and ``pack: auto``
sizes packs so that (a) the sweep still fills every concurrent slot of the cluster (two
packs on a 2-core machine rather than one pack on one core) and (b) a pack's members fit in
half the memory a slot has: free GPU memory on a GPU worker (measured there by a probe
task), available RAM per CPU slot otherwise. Every unit, of one trial or many, runs through
the one trainable (``worker.unit_trainable``); a unit of one trains with the unpacked trainer.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import ray

from dualtune.core.engine.pack_memory import member_bytes
from dualtune.core.spec import SweepSpec, TrialConfig
from dualtune.core.spec.packs import pack_groups, split_group
from dualtune.core.tasks import load_task

log = logging.getLogger(__name__)

AUTO_MAX_PACK = 64
"""``pack: auto`` never puts more members in one pack (the scaling benchmark's range)."""
MEMORY_SHARE = 0.5
"""The share of a slot's free memory ``pack: auto`` lets a pack's members take."""
UNMEASURED_MAX_PACK = 8
"""``pack: auto``'s cap when a GPU worker's free memory could not be measured."""
PROBE_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Unit:
    """What one Ray trial trains: one trial (``id`` is its trial id) or a pack of them."""

    id: str
    trials: tuple[TrialConfig, ...]

    @property
    def is_pack(self) -> bool:
        return len(self.trials) > 1

    @property
    def trial_ids(self) -> list[str]:
        return [t.trial_id for t in self.trials]


def pack_id(trials: Sequence[TrialConfig]) -> str:
    return f"pack-{trials[0].trial_id}+{len(trials) - 1}"


def _mem_available() -> int:
    """Available RAM in bytes (MemAvailable on Linux)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _free_gpu_bytes() -> int:
    import torch

    free, _ = torch.cuda.mem_get_info()
    return int(free)


def slots(spec: SweepSpec) -> int:
    """How many trials of this sweep the Ray cluster runs at once."""
    # ray.cluster_resources is untyped in Ray's stubs; it returns {resource: amount}.
    resources = ray.cluster_resources() if ray.is_initialized() else {}  # type: ignore[no-untyped-call]
    if spec.resources.gpu > 0:
        return max(1, int(resources.get("GPU", 1) // spec.resources.gpu))
    return max(1, int(resources.get("CPU", os.cpu_count() or 1) // spec.resources.cpu))


def slot_memory(spec: SweepSpec, count: int) -> int | None:
    """Bytes one slot may use: a GPU worker's free memory (measured on a GPU worker by a
    probe task) times the GPU share, or available RAM divided among the ``count`` slots.
    ``None`` when no GPU worker answered the probe in time (a cluster still scaling up)."""
    if spec.resources.gpu > 0:
        probe = ray.remote(num_gpus=spec.resources.gpu, num_cpus=0)(_free_gpu_bytes)
        try:
            free = int(ray.get(probe.remote(), timeout=PROBE_TIMEOUT_S))
        except Exception as exc:  # no GPU worker yet, or it failed: pack conservatively
            log.warning(
                "could not measure a GPU worker's free memory (%s); packs of at most %d",
                exc,
                UNMEASURED_MAX_PACK,
            )
            return None
        return int(free * min(1.0, spec.resources.gpu))
    return _mem_available() // count


def auto_pack_size(members: int, slot_count: int, memory: int | None, per_member: int) -> int:
    """Members per pack for a group of ``members`` trials under ``pack: auto``
    (``memory`` ``None``: not measured)."""
    fill = math.ceil(members / slot_count)
    if memory is None:
        fit = UNMEASURED_MAX_PACK
    else:
        fit = max(1, int(memory * MEMORY_SHARE) // max(per_member, 1))
    return max(1, min(fill, fit, AUTO_MAX_PACK))


def plan_units(
    spec: SweepSpec,
    trials: Sequence[TrialConfig],
    *,
    slot_count: Callable[[], int] | None = None,
    memory: Callable[[int], int | None] | None = None,
) -> list[Unit]:
    """The Ray trials of a sweep: packs of trials that may train together, and the rest
    one per trial, in expansion order of their first trial."""
    if spec.pack == "off":
        return [Unit(t.trial_id, (t,)) for t in trials]
    units: list[Unit] = []
    sizing: tuple[int, int | None] | None = None  # slots and a slot's memory, measured once
    for group in pack_groups(trials):
        blocker = load_task(group[0].task.name, group[0].task.params).pack_blocker()
        if len(group) == 1 or blocker is not None:
            if blocker is not None and len(group) > 1:
                log.info("not packing %d %s trials: %s", len(group), group[0].method, blocker)
            units.extend(Unit(t.trial_id, (t,)) for t in group)
            continue
        if spec.pack == "auto":
            if sizing is None:
                count = (slot_count or (lambda: slots(spec)))()
                sizing = (count, (memory or (lambda c: slot_memory(spec, c)))(count))
            size = auto_pack_size(len(group), *sizing, member_bytes(group[0]))
        else:
            size = int(spec.pack)
        for members in split_group(group, size):
            if len(members) == 1:
                units.append(Unit(members[0].trial_id, (members[0],)))
            else:
                units.append(Unit(pack_id(members), tuple(members)))
    return units
