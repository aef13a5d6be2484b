"""Operator actions: retry, revoke, requeue, discard.

Each is two steps: a GET confirmation page that says what will happen, then a POST with
the session's CSRF token and ``confirm=yes``. A run of an actor that moves money needs a
second confirmation: its actor name typed into the form. The actions themselves are the
functions ``jobctl`` calls (``ledger.operations`` and ``platform.revoke``), so each leaves
the same ``operator_actions`` row, with the console user as the operator.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for

from console.app import state
from console.auth import requires
from jobcore.errors import PlatformError, RunNotFound
from ledger.operations import RETRYABLE, dead_letters, discard_dead_letter, requeue_dead_letter, retry_run
from ledger.reader import get_run, retries_of

log = logging.getLogger(__name__)
bp = Blueprint("actions", __name__, url_prefix="/actions")

ACTIONS = ("retry", "revoke", "requeue", "discard")
# The actors that move money (actors/escrow/jobs.py: MONEY options and auto-heal), and any
# actor on the payments queue.
MONEY_ACTORS = frozenset({"PROCESS_HUNTINGTON_BATCH", "auto_heal_huntington_batches", "resend_huntington_batch"})


def is_money_actor(actor_name: str | None) -> bool:
    """True for an actor whose runs move money (extra confirmation)."""
    if not actor_name:
        return False
    if actor_name in MONEY_ACTORS:
        return True
    try:
        from actors.escrow.jobs import PAYMENTS_QUEUE

        actor = state().broker.actors.get(actor_name)
        return actor is not None and actor.queue_name == PAYMENTS_QUEUE
    except Exception:  # no escrow package: only the named actors count
        return False


def available_actions(run: dict[str, Any], retries: list[dict[str, Any]]) -> list[str]:
    """What an operator may do to ``run`` now."""
    out = []
    if run["status"] == "FINISHED" and run["resolution"] in RETRYABLE:
        out.append("retry")
    if run["status"] != "FINISHED":
        out.append("revoke")
    return out


def operator_name() -> str:
    """How the console user is recorded in ``operator_actions``."""
    return f"console:{g.principal.name}"


def _target() -> dict[str, Any]:
    """What the action of this request is about: a run, or a dead letter."""
    action = request.values.get("action", "") if request.method == "GET" else request.view_args.get("action", "") \
        if request.view_args else ""
    if action not in ACTIONS:
        abort(404, description=f"no action {action!r}")
    if action in ("retry", "revoke"):
        raw = request.values.get("run", "")
        if not raw.isdigit():
            abort(400, description="run: a run id is required")
        try:
            run = get_run(state().control(), int(raw))
        except RunNotFound:
            abort(404, description=f"no run {raw}")
        return {"action": action, "run": run, "actor": run["actor_name"], "message_id": run["message_id"],
                "money": is_money_actor(run["actor_name"]),
                "earlier": retries_of(state().control(), run["id"]) if action == "retry" else []}
    queue, ref = request.values.get("queue", ""), request.values.get("ref", "")
    if queue not in state().broker.get_declared_queues() or not ref:
        abort(400, description="queue and ref: a declared queue and a dead letter id are required")
    letter = next((d for d in dead_letters(state().broker, queue, limit=100_000)
                   if ref in (d["redis_id"], d["message_id"])), None)
    if letter is None:
        abort(404, description=f"no dead letter {ref} on queue {queue} (requeued or discarded already?)")
    return {"action": action, "queue": queue, "letter": letter, "actor": letter["actor"],
            "message_id": letter["message_id"], "money": is_money_actor(letter["actor"]), "earlier": []}


@bp.get("/confirm")
@requires("operator")
def confirm() -> Any:
    target = _target()
    return render_template("confirm.html", page="runs" if "run" in target else "dead", t=target)


@bp.post("/<action>")
@requires("operator")
def perform(action: str) -> Any:
    target = _target()
    if request.form.get("confirm") != "yes":
        abort(400, description="not confirmed: use the confirmation page")
    if target["money"] and not hmac.compare_digest(request.form.get("money_confirm", "").strip(),
                                                   str(target["actor"])):
        abort(400, description=f"{target['actor']} moves money: type its name to confirm")
    s = state()
    who = operator_name()
    log.info("Console action %s on %s by %s", action, target.get("message_id"), who)
    try:
        if action == "retry":
            new = retry_run(s.broker, s.control(), target["run"]["id"], operator=who,
                            force=request.form.get("force") == "yes")
            s.platform.sync()
            flash(f"Run {target['run']['id']} retried as a new run.", "ok")
            new_run = get_run(s.control(), new.message_id)
            return redirect(url_for("run.detail", run_id=new_run["id"]), 303)
        if action == "revoke":
            result = s.platform.revoke(target["message_id"], operator=who)
            flash({"revoked": "Revoked: the queued run will not start.",
                   "revoking": "Revoking: the running run stops at its next checkpoint.",
                   "already-finished": f"Nothing to revoke: the run already finished "
                                       f"{result.resolution}."}[result.outcome], "ok")
            return redirect(url_for("run.detail", run_id=target["run"]["id"]), 303)
        ref = target["letter"]["redis_id"]
        if action == "requeue":
            new = requeue_dead_letter(s.broker, s.control(), target["queue"], ref, operator=who)
            flash(f"Dead letter {ref} requeued as message {new.message_id}.", "ok")
        else:
            discard_dead_letter(s.broker, s.control(), target["queue"], ref, operator=who)
            flash(f"Dead letter {ref} discarded.", "ok")
        return redirect(url_for("dead.index", queue=target["queue"]), 303)
    except PlatformError as exc:
        from console.formatting import redact_text

        flash(f"{action} refused: {redact_text(str(exc))}", "error")
        back = url_for("run.detail", run_id=target["run"]["id"]) if "run" in target else \
            url_for("dead.index", queue=target["queue"])
        return redirect(back, 303)
