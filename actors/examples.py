"""The seed's development/test tasks, kept under their registered names."""

from __future__ import annotations

import time

import dramatiq

from jobcore.context import current_context
from ledger.progress import report_progress


class ExampleError(RuntimeError):
    """The failure EXAMPLE_ERROR raises on purpose."""


@dramatiq.actor(actor_name="EXAMPLE", queue_name="default")
def example(value: object = None) -> dict[str, object]:
    """Succeeds and returns what it was given, with the caller's context."""
    return {"echo": value, "tenant_id": current_context().tenant_id}


@dramatiq.actor(actor_name="EXAMPLE_ERROR", queue_name="default")
def example_error(reason: str = "example failure") -> None:
    """Always fails (exercises retries, job_errors and error events)."""
    raise ExampleError(reason)


@dramatiq.actor(actor_name="EXAMPLE_PROGRESS", queue_name="default")
def example_progress(steps: int = 5, step_seconds: float = 0.2) -> int:
    """Works in ``steps`` steps, reporting progress (and checking for revocation) after each."""
    for i in range(1, steps + 1):
        time.sleep(step_seconds)
        report_progress(i / steps, message=f"step {i} of {steps}")
    return steps


@dramatiq.actor(actor_name="EXAMPLE_WITH_ARGS", queue_name="default")
def example_with_args(a: int, b: int, *, label: str = "sum", api_key: str | None = None) -> dict[str, object]:
    """Adds two numbers; ``api_key`` exists to show that secrets are redacted in the ledger."""
    return {"label": label, "result": a + b, "authenticated": api_key is not None}
