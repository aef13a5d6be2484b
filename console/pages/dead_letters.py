"""Dead letters: each queue's dead-lettered messages (arguments redacted), with the
rejection reason when the worker could not even decode them; requeue and discard."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template, request

from console.app import state
from jobcore.queues import queue_depths
from ledger.operations import dead_letters
from ledger.reader import RunFilter, query_runs, rejections

bp = Blueprint("dead", __name__)
LIMIT = 200


@bp.get("/dead-letters")
def index() -> Any:
    broker = state().broker
    depths = [q for q in queue_depths(broker.client, broker.keys, broker.get_declared_queues())]
    queue = request.args.get("queue") or next((q["queue"] for q in depths if q["dead"]), "default")
    declared = {q["queue"] for q in depths}
    error = None if queue in declared else f"queue: no queue {queue[:60]!r}"
    letters = dead_letters(broker, queue, limit=LIMIT) if error is None else []
    engine = state().control()
    reasons = rejections(engine, queue, [d["redis_id"] for d in letters])
    message_ids = [str(d["message_id"]) for d in letters if d["message_id"]]
    runs = {r["message_id"]: r for r in query_runs(engine, RunFilter(message_ids=message_ids), limit=LIMIT)} \
        if message_ids else {}
    for d in letters:
        d["rejection"] = reasons.get(d["redis_id"])
        d["run"] = runs.get(d["message_id"])
    return render_template("dead_letters.html", page="dead", queues=depths, queue=queue, letters=letters,
                           error=error, limit=LIMIT)
