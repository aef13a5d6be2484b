"""Every Redis key name the platform reads or writes, in one place.

dramatiq's RedisBroker owns the queue layout (its ``dispatch.lua``); the names of those
keys are repeated here only so that the platform's own scripts, the exporter, the CLI
and the console never spell them twice:

* ``<ns>:<queue>`` list of ready Redis message ids, ``<ns>:<queue>.msgs`` hash of their
  payloads (ready *and* fetched-but-unacked), ``<queue>.DQ`` the delay queue and
  ``<queue>.XQ`` the dead-letter sorted set (each with its ``.msgs`` hash);
* ``<ns>:__acks__.<broker id>.<queue>`` the messages a worker fetched and holds;
* ``<ns>:__heartbeats__`` every broker id (workers *and* producers) by last heartbeat.

The platform's own keys live under ``<ns>:platform:`` and ``<ns>:ledger:``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """Key names of one namespace (``REDIS_NAMESPACE``)."""

    namespace: str

    # -- dramatiq's queue layout -------------------------------------------------------
    def queue(self, queue_name: str) -> str:
        """Ready list of ``queue_name`` (``queue_name`` may end in ``.DQ``)."""
        return f"{self.namespace}:{queue_name}"

    def messages(self, queue_name: str) -> str:
        """Payload hash of ``queue_name`` (redis message id -> encoded message)."""
        return f"{self.namespace}:{queue_name}.msgs"

    def delayed(self, queue_name: str) -> str:
        return f"{self.namespace}:{queue_name}.DQ"

    def delayed_messages(self, queue_name: str) -> str:
        return f"{self.namespace}:{queue_name}.DQ.msgs"

    def dead(self, queue_name: str) -> str:
        """Dead-letter sorted set of ``queue_name`` (redis id scored by time of death)."""
        return f"{self.namespace}:{queue_name}.XQ"

    def dead_messages(self, queue_name: str) -> str:
        return f"{self.namespace}:{queue_name}.XQ.msgs"

    def acks(self, broker_id: str, queue_name: str) -> str:
        """The messages ``broker_id`` fetched from ``queue_name`` and has not acked."""
        return f"{self.namespace}:__acks__.{broker_id}.{queue_name}"

    @property
    def heartbeats(self) -> str:
        return f"{self.namespace}:__heartbeats__"

    @property
    def messages_pattern(self) -> str:
        """SCAN pattern matching every payload hash of the namespace."""
        return f"{self.namespace}:*.msgs"

    @property
    def pattern(self) -> str:
        """SCAN pattern matching every key of the namespace."""
        return f"{self.namespace}:*"

    def wake(self, queue_name: str) -> str:
        """Wake-up tokens idle consumers of ``queue_name`` block on."""
        return f"{self.namespace}:{queue_name}.wake"

    # -- liveness ------------------------------------------------------------------------
    @property
    def workers(self) -> str:
        """Worker processes only, by last heartbeat (``__heartbeats__`` also has producers)."""
        return f"{self.namespace}:platform:workers"

    @property
    def schedulers(self) -> str:
        return f"{self.namespace}:platform:schedulers"

    # -- platform state ------------------------------------------------------------------
    @property
    def revoked(self) -> str:
        """Revoked message ids, scored by revocation time (seconds)."""
        return f"{self.namespace}:platform:revoked"

    @property
    def stats(self) -> str:
        """Counters of the reliability mechanisms (``reconciled``, ``stuck_fetch_requeued``...)."""
        return f"{self.namespace}:platform:stats"

    @property
    def reconcile_lock(self) -> str:
        return f"{self.namespace}:platform:reconcile-lock"

    # -- the ledger buffer ---------------------------------------------------------------
    @property
    def ledger_stream(self) -> str:
        """Stream of ledger events waiting to be applied to PostgreSQL."""
        return f"{self.namespace}:ledger:events"

    @property
    def ledger_runs(self) -> str:
        """Hash message id -> attempts so far of open runs (removed when they finish)."""
        return f"{self.namespace}:ledger:runs"

    @property
    def ledger_finished(self) -> str:
        """Sorted set of recently finished runs (message id scored by finish time, ms): a
        redelivered or re-sent copy of a finished run is refused before it starts."""
        return f"{self.namespace}:ledger:finished"

    @property
    def ledger_epoch(self) -> str:
        """Random token naming the life of the stream: a Redis that lost its data has a
        new (or no) epoch, so the drain cursor of the old one is not applied to it."""
        return f"{self.namespace}:ledger:epoch"

    @property
    def ledger_applied(self) -> str:
        """Stream id of the last entry applied to PostgreSQL, as Redis last heard it (set
        with each trim): a failover to a replica that has an older value lost writes."""
        return f"{self.namespace}:ledger:applied"

    @property
    def ledger_lease(self) -> str:
        """Soft lease of the process that drains continuously (correctness never depends
        on it: the cursor in PostgreSQL fences concurrent drainers)."""
        return f"{self.namespace}:ledger:drain-lease"
