"""Email matching: link synced emails to cases by contact address and by thread.

Idempotent by construction: each email is processed while ``matched_at`` is NULL, matches
are unique per (email, case) and inserted with ``ON CONFLICT DO NOTHING``, and the batch
is committed together with the ``matched_at`` marks. Batches lock their emails with
``SKIP LOCKED`` so two matching runs for one agency share the work instead of waiting.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

_CLAIM = text("""
    SELECT id FROM casemgmt.emails WHERE matched_at IS NULL ORDER BY id LIMIT :n FOR UPDATE SKIP LOCKED
""")

# Contacts of live cases whose address is the sender or a recipient.
_BY_ADDRESS = text("""
    INSERT INTO casemgmt.email_matches (email_id, case_id, contact_id, match_type)
    SELECT DISTINCT ON (e.id, c.case_id) e.id, c.case_id, c.id, 'address'
    FROM casemgmt.emails e
    JOIN casemgmt.contacts c ON c.deleted_at IS NULL AND c.email IS NOT NULL
     AND lower(c.email) = ANY(array_append(e.to_addresses || e.cc_addresses, e.from_address))
    JOIN casemgmt.cases k ON k.id = c.case_id AND k.deleted_at IS NULL
    WHERE e.id = ANY(:ids)
    ORDER BY e.id, c.case_id, c.id
    ON CONFLICT (email_id, case_id) DO NOTHING
""")

# New emails join the cases of other emails in their thread ...
_THREAD_IN = text("""
    INSERT INTO casemgmt.email_matches (email_id, case_id, match_type)
    SELECT DISTINCT e.id, m.case_id, 'thread'
    FROM casemgmt.emails e
    JOIN casemgmt.emails o ON o.thread_id = e.thread_id AND o.id <> e.id
    JOIN casemgmt.email_matches m ON m.email_id = o.id
    JOIN casemgmt.cases k ON k.id = m.case_id AND k.deleted_at IS NULL
    WHERE e.id = ANY(:ids)
    ON CONFLICT (email_id, case_id) DO NOTHING
""")

# ... and earlier emails of a thread join a case that a new email was just matched to
# (a reply can arrive, or be synced, before the message that starts the thread).
_THREAD_OUT = text("""
    INSERT INTO casemgmt.email_matches (email_id, case_id, match_type)
    SELECT DISTINCT o.id, m.case_id, 'thread'
    FROM casemgmt.email_matches m
    JOIN casemgmt.emails e ON e.id = m.email_id AND e.id = ANY(:ids)
    JOIN casemgmt.emails o ON o.thread_id = e.thread_id AND o.id <> e.id
    JOIN casemgmt.cases k ON k.id = m.case_id AND k.deleted_at IS NULL
    ON CONFLICT (email_id, case_id) DO NOTHING
""")

_MARK = text("UPDATE casemgmt.emails SET matched_at = now() WHERE id = ANY(:ids)")


@dataclass
class MatchResult:
    """How many emails were examined and how many matches were created."""

    processed: int = 0
    matches: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def match_emails(session: Session, *, batch_size: int = 500) -> MatchResult:
    """Match every not-yet-matched email of the agency, ``batch_size`` per transaction."""
    result = MatchResult()
    while True:
        ids = list(session.execute(_CLAIM, {"n": batch_size}).scalars())
        if not ids:
            session.commit()
            break
        created = 0
        for stmt in (_BY_ADDRESS, _THREAD_IN, _THREAD_OUT):
            created += session.execute(stmt, {"ids": ids}).rowcount  # type: ignore[attr-defined]
        session.execute(_MARK, {"ids": ids})
        session.commit()
        result.processed += len(ids)
        result.matches += created
        if len(ids) < batch_size:
            break
    log.info("matched %s emails, %s new matches", result.processed, result.matches)
    return result
