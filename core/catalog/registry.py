"""Plugin registries: the tasks and constraint kinds dualtune can run (ARCHITECTURE §3.8).

Built-in and third-party entries arrive the same way: an entry point in the group
``dualtune.tasks`` (``dualtune.constraints``) whose name is the entry's name and whose value
(``module:attribute``, a module that imports no torch) is a ``TaskInfo``
(``ConstraintKindInfo``). The project's own pyproject registers the built-in ones.

Discovery runs once per process, on first use. An entry point that fails to load, holds the
wrong type or reuses a name is not registered; it is kept as a ``PluginError`` (the catalog
lists it) and every other entry keeps working. ``register_task`` / ``register_constraint_kind``
add entries in-process (notebooks, ``run_sweep``).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Generic, Protocol, TypeVar

from dualtune.core.catalog.constraints import ConstraintKindInfo
from dualtune.core.catalog.tasks import TaskInfo

DISTRIBUTION = "dualtune"
TASKS_GROUP = "dualtune.tasks"
CONSTRAINTS_GROUP = "dualtune.constraints"
IN_PROCESS = "registered in-process"


class Named(Protocol):
    @property
    def name(self) -> str: ...


InfoT = TypeVar("InfoT", bound=Named)


@dataclass(frozen=True)
class PluginError:
    """An entry point that could not be registered, and why."""

    group: str
    name: str
    source: str
    """The distribution and the entry point's value, e.g. ``my-tasks 1.2 (my_tasks:INFO)``."""
    error: str

    def describe(self) -> str:
        return f"{self.name} from {self.source}: {self.error}"


def _source(ep: EntryPoint) -> str:
    dist = ep.dist
    where = f"{dist.name} {dist.version}" if dist is not None else "an unnamed distribution"
    return f"{where} ({ep.value})"


def _built_in_first(ep: EntryPoint) -> tuple[bool, str, int, str]:
    """On a name collision the earlier entry stays: dualtune's own, then by distribution
    name. The built-in entries keep the order their module defines them in (the catalog's
    order: the metadata lists entry points sorted by name)."""
    dist = ep.dist.name if ep.dist is not None else ""
    if dist != DISTRIBUTION:
        return (True, dist, 0, ep.name)
    module = importlib.import_module(ep.module)
    names = list(vars(module))
    return (False, dist, names.index(ep.attr) if ep.attr in names else len(names), ep.name)


class Registry(Mapping[str, InfoT], Generic[InfoT]):
    """Entries of one entry-point group by name, discovered on first use."""

    def __init__(self, group: str, info_type: type[InfoT], noun: str) -> None:
        self.group = group
        self.info_type = info_type
        self.noun = noun
        self._lock = threading.Lock()
        self._entries: dict[str, InfoT] | None = None
        self._sources: dict[str, str] = {}
        self._errors: list[PluginError] = []
        self._in_process: dict[str, InfoT] = {}

    # -- discovery ---------------------------------------------------------------------------

    def _loaded(self) -> dict[str, InfoT]:
        entries = self._entries
        if entries is None:
            with self._lock:
                if self._entries is None:
                    self._entries = self._discover()
                entries = self._entries
        return entries

    def _discover(self) -> dict[str, InfoT]:
        entries: dict[str, InfoT] = {}
        self._sources, self._errors = {}, []
        for ep in sorted(entry_points(group=self.group), key=_built_in_first):
            source = _source(ep)
            problem = self._admit(ep, source, entries)
            if problem is not None:
                self._errors.append(PluginError(self.group, ep.name, source, problem))
        for info in self._in_process.values():
            entries.setdefault(info.name, info)
            self._sources.setdefault(info.name, IN_PROCESS)
        return entries

    def _admit(self, ep: EntryPoint, source: str, entries: dict[str, InfoT]) -> str | None:
        """Load ``ep`` into ``entries``; the reason it was refused, else ``None``."""
        if ep.name in entries:
            return (
                f"{self.noun} {ep.name!r} is already registered by {self._sources[ep.name]}; "
                "rename one of them"
            )
        try:
            info = ep.load()
        except Exception as exc:  # a plugin's import may raise anything
            return f"failed to import: {type(exc).__name__}: {exc}"
        if not isinstance(info, self.info_type):
            return (
                f"{ep.value} is a {type(info).__name__}, not a dualtune.{self.info_type.__name__}"
            )
        if info.name != ep.name:
            return f"the entry point is named {ep.name!r} but its {self.noun} is {info.name!r}"
        entries[ep.name] = info
        self._sources[ep.name] = source
        return None

    def reload(self) -> None:
        """Discover the entry points again (after installing a plugin in this process)."""
        with self._lock:
            self._entries = None

    # -- in-process registration -------------------------------------------------------------

    def register(self, info: InfoT) -> InfoT:
        """Add ``info`` in this process. Registering the same info again is a no-op (a
        notebook cell run twice); another entry under its name is refused."""
        if not isinstance(info, self.info_type):
            raise TypeError(f"expected a dualtune.{self.info_type.__name__}, got {info!r}")
        entries = self._loaded()
        with self._lock:
            existing = entries.get(info.name)
            if existing is not None and existing != info:
                raise ValueError(
                    f"{self.noun} {info.name!r} is already registered by "
                    f"{self._sources[info.name]}; register yours under another name"
                )
            entries[info.name] = info
            self._sources[info.name] = self._sources.get(info.name, IN_PROCESS)
            if self._sources[info.name] == IN_PROCESS:
                self._in_process[info.name] = info
        return info

    def registered_in_process(self) -> tuple[InfoT, ...]:
        """The entries ``register`` added: a driver hands them to its trials' processes."""
        return tuple(self._in_process.values())

    def unregister(self, name: str) -> None:
        """Remove an in-process entry (tests, notebooks)."""
        with self._lock:
            if self._in_process.pop(name, None) is not None and self._entries is not None:
                self._entries.pop(name, None)
                self._sources.pop(name, None)

    # -- reading -----------------------------------------------------------------------------

    @property
    def errors(self) -> tuple[PluginError, ...]:
        """Entry points of this group that could not be registered."""
        self._loaded()
        return tuple(self._errors)

    def source(self, name: str) -> str:
        """Where entry ``name`` came from: a distribution and entry point, or in-process."""
        self._loaded()
        return self._sources[name]

    def built_in(self, name: str) -> bool:
        """Whether entry ``name`` is dualtune's own (registered by its own metadata)."""
        return self.source(name).split(" ", 1)[0] == DISTRIBUTION

    def __getitem__(self, name: str) -> InfoT:
        return self._loaded()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._loaded()))

    def __len__(self) -> int:
        return len(self._loaded())

    def __contains__(self, name: object) -> bool:
        return name in self._loaded()


TASKS: Registry[TaskInfo] = Registry(TASKS_GROUP, TaskInfo, "task")
CONSTRAINT_KINDS: Registry[ConstraintKindInfo] = Registry(
    CONSTRAINTS_GROUP, ConstraintKindInfo, "constraint kind"
)


def register_task(info: TaskInfo) -> TaskInfo:
    """Add a task in this process (ARCHITECTURE §3.8); its ``builder`` module must be
    importable where the trials run."""
    return TASKS.register(info)


def register_constraint_kind(info: ConstraintKindInfo) -> ConstraintKindInfo:
    """Add a constraint kind in this process; its ``builder`` module must be importable
    where the trials run."""
    return CONSTRAINT_KINDS.register(info)


def plugin_errors() -> tuple[PluginError, ...]:
    """Every entry point of either group that could not be registered."""
    return TASKS.errors + CONSTRAINT_KINDS.errors
