"""Prometheus metrics: HTTP requests, sweeps and trials by state, launches, reconciler errors,
stray drivers, the launcher's health, rejected events."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from dualtune.core.states import SweepState, TrialState
from dualtune.service.db.repository import Repository


class _StateGauges(Collector):
    """Sweeps and trials by state, read from the database at scrape time (so every replica
    reports the same truth)."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    def collect(self) -> Iterator[GaugeMetricFamily]:
        sweeps = GaugeMetricFamily("dualtune_sweeps", "Sweeps by state", labels=["state"])
        trials = GaugeMetricFamily("dualtune_trials", "Trials by state", labels=["state"])
        try:
            by_sweep, by_trial = self.repo.sweeps_by_status(), self.repo.trials_by_status()
        except Exception:  # a scrape must not fail because the DB blinked; readyz says so
            return
        for sweep_state in SweepState:
            sweeps.add_metric([sweep_state.value], by_sweep.get(sweep_state, 0))
        for trial_state in TrialState:
            trials.add_metric([trial_state.value], by_trial.get(trial_state, 0))
        yield sweeps
        yield trials


class ServiceMetrics:
    """One registry per app, so several apps (tests, replicas in one process) never clash."""

    def __init__(self, repo: Repository) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "dualtune_http_requests",
            "HTTP requests by route, method and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "dualtune_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=self.registry,
        )
        self.launch_latency = Histogram(
            "dualtune_launch_latency_seconds",
            "From a sweep queued (submitted, retried, or its launch last refused) to its driver "
            "launched",
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900),
            registry=self.registry,
        )
        self.launches = Counter(
            "dualtune_driver_launches",
            "Driver launches by outcome (launched, relaunched, failed)",
            ["outcome"],
            registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "dualtune_reconcile_errors",
            "Reconcile steps of one sweep that raised, by exception class (the round goes on)",
            ["kind"],
            registry=self.registry,
        )
        self.strays_stopped = Counter(
            "dualtune_stray_drivers_stopped",
            "Drivers stopped because they were not their sweep's current launch",
            registry=self.registry,
        )
        self.launcher_up = Gauge(
            "dualtune_launcher_up",
            "1 when the launcher's last background check succeeded, else 0",
            registry=self.registry,
        )
        self.events_rejected = Counter(
            "dualtune_events_rejected",
            "Trial events rejected one by one (invalid, or a final trial's state changed)",
            registry=self.registry,
        )
        self.registry.register(_StateGauges(repo))
