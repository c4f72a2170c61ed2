"""What tests that start Ray heads of their own share about the Jobs API."""

from __future__ import annotations

import time


def wait_for_job_agent(address: str, token: str) -> None:
    """A new head answers before its job agent is up ("No available agent to submit job"):
    wait until a trivial job is accepted, as the reconciler would by backing off."""
    from ray.job_submission import JobSubmissionClient

    jobs = JobSubmissionClient(address, headers={"Authorization": f"Bearer {token}"})
    deadline = time.monotonic() + 120
    while True:
        try:
            jobs.submit_job(entrypoint="true")
            return
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1)
