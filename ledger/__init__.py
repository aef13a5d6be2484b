"""The JobRun ledger: every message's life as one row in ``job_runs``.

* :mod:`ledger.events` the transitions, typed, and their one codec;
* :mod:`ledger.model` the rules of how events change a row (the specification);
* :mod:`ledger.queries` every ledger statement, by name;
* :mod:`ledger.strategy` the write interface the broker and middleware use;
  :mod:`ledger.buffered` the platform's Redis-stream strategy,
  :mod:`ledger.memory` an in-memory one for tests;
* :mod:`ledger.stream`, :mod:`ledger.store`, :mod:`ledger.drainer` the buffer in Redis,
  how chunks are applied to PostgreSQL, and who applies them;
* :mod:`ledger.recorder` events from messages (redaction, limits);
* :mod:`ledger.revocation`, :mod:`ledger.reconcile`, :mod:`ledger.progress`,
  :mod:`ledger.operations`, :mod:`ledger.reader`, :mod:`ledger.retention`.
"""
