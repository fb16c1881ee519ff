"""A failure handler's recovery script, run as Torc runs it: in the runner that saw the job
fail, as its own process, before the result is reported, with ``TORC_RETURN_CODE`` set.

Why before the report: the report is what makes the server schedule the retry, and Torc
retries only when the recovery script succeeded. So the runner runs the script first and says
in the result whether it failed (``recovery_failed``); the engine then withholds the retry and
the result's ``note`` says why. The runner takes the rule from the same handler the engine
uses (:meth:`~torc_core.spec.FailureHandler.rule_for`, retries left while the attempt is at
most ``max_retries``), so both decide alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torc_core.spec import FailureHandler, failure_handler_from_json

from .procs import ProcessOutcome


def handlers_of(workflow: Mapping[str, Any]) -> dict[str, FailureHandler]:
    """The workflow's failure handlers by name (from ``GET /workflows/{id}``)."""
    return {str(h["name"]): failure_handler_from_json(h)
            for h in workflow.get("failure_handlers") or ()}


def script_for(handlers: Mapping[str, FailureHandler], job: Mapping[str, Any],
               return_code: int, attempt: int) -> str | None:
    """The recovery script to run before ``job``'s retry, or None (no handler, no matching
    rule, no retry left, or a rule without a script)."""
    handler = handlers.get(job.get("failure_handler") or "")
    rule = handler.rule_for(return_code) if handler is not None else None
    if rule is None or attempt > rule.max_retries:
        return None
    return rule.recovery_script or None


def verdict(outcome: ProcessOutcome, log: str) -> dict[str, Any]:
    """What the result says of the recovery script's run."""
    if outcome.error is not None:
        return {"recovery_failed": True,
                "note": f"recovery script could not start ({outcome.error}): not retried"}
    if outcome.terminated:
        return {"recovery_failed": True, "note": "recovery script was terminated: not retried"}
    if outcome.return_code != 0:
        return {"recovery_failed": True,
                "note": f"recovery script exited {outcome.return_code}: not retried "
                        f"(its output: {log})"}
    return {"note": "recovery script succeeded: retried"}
