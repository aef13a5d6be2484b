"""Typed SQLAlchemy models of the control database (the JobRun ledger)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

STATUSES = ("PENDING", "STARTED", "FINISHED")
RESOLUTIONS = ("COMPLETED", "ERROR", "EXPIRED", "REVOKED")


class Base(DeclarativeBase):
    """Declarative base of the control database."""


class JobRun(Base):
    """One logical job: created PENDING at send, one row however many attempts it takes."""

    __tablename__ = "job_runs"
    __table_args__ = (
        CheckConstraint("status IN ('PENDING', 'STARTED', 'FINISHED')", name="ck_job_runs_status"),
        CheckConstraint(
            "resolution IS NULL OR resolution IN ('COMPLETED', 'ERROR', 'EXPIRED', 'REVOKED')",
            name="ck_job_runs_resolution",
        ),
        # resolution is set exactly when the run is FINISHED.
        CheckConstraint("(status = 'FINISHED') = (resolution IS NOT NULL)", name="ck_job_runs_finished"),
        Index("ix_job_runs_open", "queue_name", "actor_name", "enqueued_at",
              postgresql_where=text("status <> 'FINISHED'")),
        Index("ix_job_runs_finished_at", "finished_at"),
        Index("ix_job_runs_actor_status", "actor_name", "status", "resolution"),
        Index("ix_job_runs_tenant", "tenant_id", "enqueued_at"),
        Index("ix_job_runs_retry_of", "retry_of", postgresql_where=text("retry_of IS NOT NULL")),
        # The console's run lists are keyset-paginated on id (newest first) under any one
        # filter: each filter has an index ending in id, so a page is a range scan
        # (migration h0004).
        Index("ix_job_runs_actor_id", "actor_name", "id"),
        Index("ix_job_runs_tenant_id", "tenant_id", "id"),
        Index("ix_job_runs_resolution_id", "resolution", "id"),
        Index("ix_job_runs_open_id", "status", "id", postgresql_where=text("status <> 'FINISHED'")),
        Index("ix_job_runs_enqueued_id", "enqueued_at", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(64), unique=True)
    actor_name: Mapped[str] = mapped_column(String(200))
    queue_name: Mapped[str] = mapped_column(String(200))
    tenant_id: Mapped[int | None] = mapped_column(Integer)
    args: Mapped[list[Any]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    kwargs: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    context: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    status: Mapped[str] = mapped_column(String(16))
    resolution: Mapped[str | None] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    enqueued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    retry_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoke_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    result: Mapped[Any | None] = mapped_column(JSONB)
    progress: Mapped[Any | None] = mapped_column(JSONB)
    worker_id: Mapped[str | None] = mapped_column(String(64))
    retry_of: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("job_runs.id", ondelete="SET NULL"))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    errors: Mapped[list[JobError]] = relationship(back_populates="run", order_by="JobError.attempt")


class JobError(Base):
    """One failed attempt of a run."""

    __tablename__ = "job_errors"
    __table_args__ = (
        UniqueConstraint("job_run_id", "attempt", name="uq_job_errors_run_attempt"),
        Index("ix_job_errors_created_at", "created_at"),
        # Runs of one error group, and when the group was first seen (console).
        Index("ix_job_errors_fingerprint", "fingerprint", "job_run_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    job_run_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("job_runs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    exception_type: Mapped[str] = mapped_column(String(300))
    message: Mapped[str] = mapped_column(Text)
    traceback: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64))
    will_retry: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    run: Mapped[JobRun] = relationship(back_populates="errors")


class RejectedMessage(Base):
    """A message the worker could not even hand to an actor (undecodable, unknown
    actor): kept with the reason; the message itself sits in the dead-letter queue."""

    __tablename__ = "rejected_messages"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    queue_name: Mapped[str] = mapped_column(String(200))
    redis_message_id: Mapped[str | None] = mapped_column(String(64))
    message_id: Mapped[str | None] = mapped_column(String(64))
    actor_name: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class LedgerCursor(Base):
    """How far the ledger buffer (a Redis stream) has been applied, per Redis namespace.

    ``epoch`` names the stream's life (a Redis that lost its data starts a new one);
    ``last_id`` is the last stream entry applied. The drainer advances it with a
    compare-and-set in the same transaction as the events it applies."""

    __tablename__ = "ledger_cursor"

    namespace: Mapped[str] = mapped_column(String(200), primary_key=True)
    epoch: Mapped[str] = mapped_column(String(64))
    last_id: Mapped[str] = mapped_column(String(64))
    applied: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class LedgerDeadEvent(Base):
    """A buffered event PostgreSQL refused (kept verbatim, with the reason; alerted on)."""

    __tablename__ = "ledger_dead_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    namespace: Mapped[str] = mapped_column(String(200))
    stream_id: Mapped[str] = mapped_column(String(64))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    error: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class OperatorAction(Base):
    """Audit trail: who revoked, retried, requeued or discarded what, and when."""

    __tablename__ = "operator_actions"
    __table_args__ = (Index("ix_operator_actions_message_id", "message_id"),
                      Index("ix_operator_actions_created_at", "created_at"))

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    action: Mapped[str] = mapped_column(String(32))  # revoke | retry | requeue | discard
    message_id: Mapped[str | None] = mapped_column(String(64))
    run_id: Mapped[int | None] = mapped_column(BigInteger)
    operator: Mapped[str] = mapped_column(String(200))
    detail: Mapped[Any | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
