"""Drivers as Ray Jobs on a cluster (the Jobs API on the head's dashboard port).

The submission id is derived from the sweep, its generation and launch number, so
submitting the same launch twice (the service crashed between submit and record) adopts
the job already there instead of starting a second driver. Ray 2.6x clusters use token
auth: the token goes in the ``Authorization`` header of every call.

The job's ``runtime_env`` is the launcher's own (from the service's configuration) with the
spec's ``runtime`` merged in: its pip requirements after the launcher's, its environment
variables under dualtune's own. Ray applies it to the driver and every trial of the job.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

from dualtune.service.errors import LauncherError, Unavailable
from dualtune.service.launchers.base import (
    DriverInfo,
    DriverState,
    LaunchRequest,
    driver_command,
)

SWEEP_METADATA = "dualtune.sweep_id"


def default_ray_token() -> str | None:
    token = os.environ.get("RAY_AUTH_TOKEN")
    if token:
        return token.strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    return path.read_text().strip() if path.is_file() else None


def _merged_requirements(existing: object, extra: list[str], field: str) -> object:
    """``existing`` (a ``runtime_env`` pip or uv field: a list, or a dict with ``packages``)
    with the requirements of ``extra`` it does not hold yet appended."""
    if isinstance(existing, list):
        return [*existing, *(r for r in extra if r not in existing)]
    if isinstance(existing, dict) and isinstance(existing.get("packages"), list):
        packages = existing["packages"]
        return {**existing, "packages": [*packages, *(r for r in extra if r not in packages)]}
    raise LauncherError(
        f"the ray launcher's runtime_env sets {field} to {existing!r}, which the spec's "
        "runtime.pip cannot be added to; give it as a list of requirements"
    )


def job_runtime_env(base: dict[str, Any], request: LaunchRequest) -> dict[str, Any]:
    """The runtime_env of ``request``'s job: ``base`` (the launcher's) with the spec's
    ``runtime`` and dualtune's variables merged in."""
    runtime_env = {**base}
    runtime_env["env_vars"] = {
        **request.runtime.env_vars,
        **(base.get("env_vars") or {}),
        **request.dualtune_env(),
    }
    pip = list(request.runtime.pip)
    if pip:
        if "conda" in base:
            raise LauncherError(
                "the ray launcher's runtime_env uses conda, and Ray takes conda or pip, not "
                "both: add the spec's runtime.pip to the conda environment instead"
            )
        field = "uv" if "uv" in base else "pip"
        existing = base.get(field)
        runtime_env[field] = (
            pip if existing is None else _merged_requirements(existing, pip, field)
        )
    return runtime_env


class RayJobsLauncher:
    name = "ray"

    def __init__(
        self, address: str, *, token: str | None = None, runtime_env: dict[str, Any] | None = None
    ) -> None:
        self.address = address
        self.token = token if token is not None else default_ray_token()
        self.runtime_env = runtime_env or {}
        self._client: Any = None

    def _jobs(self) -> Any:
        if self._client is None:
            try:
                from ray.job_submission import JobSubmissionClient
            except ImportError as exc:  # the service image may leave Ray out
                raise Unavailable(
                    "the ray launcher needs Ray's job client: pip install 'ray[default]'"
                ) from exc
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
            try:
                self._client = JobSubmissionClient(self.address, headers=headers)
            except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ...
                raise Unavailable(
                    f"cannot reach the Ray Jobs API at {self.address}: {exc}"
                ) from exc
        return self._client

    def launch(self, request: LaunchRequest) -> str:
        jobs = self._jobs()
        runtime_env = job_runtime_env(self.runtime_env, request)
        try:
            return str(
                jobs.submit_job(
                    entrypoint=shlex.join(driver_command(request)),
                    submission_id=request.submission_id,
                    runtime_env=runtime_env,
                    metadata={SWEEP_METADATA: request.sweep_id},
                )
            )
        except Exception as exc:
            if "already exists" in str(exc):
                return request.submission_id  # this launch was submitted before: adopt it
            raise LauncherError(f"Ray refused the driver job: {exc}") from exc

    def state(self, ref: str) -> DriverState:
        from ray.job_submission import JobStatus

        try:
            status = self._jobs().get_job_status(ref)
        except Exception as exc:
            if "does not exist" in str(exc) or "404" in str(exc):
                return DriverState.GONE
            raise Unavailable(f"cannot read job {ref} from Ray: {exc}") from exc
        if status in (JobStatus.PENDING, JobStatus.RUNNING):
            return DriverState.RUNNING
        if status == JobStatus.SUCCEEDED:
            return DriverState.EXITED
        return DriverState.FAILED

    def stop(self, ref: str) -> None:
        try:
            self._jobs().stop_job(ref)
        except Exception as exc:
            if "does not exist" not in str(exc):
                raise LauncherError(f"cannot stop job {ref}: {exc}") from exc

    def logs(self, ref: str) -> str:
        try:
            return str(self._jobs().get_job_logs(ref))
        except Exception as exc:
            raise LauncherError(f"cannot read the logs of job {ref}: {exc}") from exc

    def running_drivers(self) -> list[DriverInfo]:
        from ray.job_submission import JobStatus

        try:
            jobs = self._jobs().list_jobs()
        except Unavailable:
            raise
        except Exception as exc:
            raise Unavailable(f"cannot list the jobs of {self.address}: {exc}") from exc
        return [
            DriverInfo(job.submission_id, job.metadata[SWEEP_METADATA], job.submission_id)
            for job in jobs
            if job.submission_id
            and SWEEP_METADATA in (job.metadata or {})
            and job.status in (JobStatus.PENDING, JobStatus.RUNNING)
        ]

    def check_ready(self) -> None:
        try:
            self._jobs().list_jobs()
        except Unavailable:
            raise
        except Exception as exc:
            raise Unavailable(
                f"the Ray Jobs API at {self.address} does not answer: {exc}"
            ) from exc
