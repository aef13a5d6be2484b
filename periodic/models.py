"""Tick history (control database).

``schedule_ticks`` has one row per (schedule, nominal fire time): the unique key is what
makes two schedulers enqueue a tick exactly once (a PostgreSQL unique key rather than a
Redis key, because the tick history has to be durable and queryable next to the ledger
anyway, and the insert that claims the tick *is* the history row). ``status`` is
CLAIMED (briefly, between the claim and the send; a tick CLAIMED for longer than
SCHEDULER_CLAIM_STALE_S was left by a scheduler that died, and is re-sent by any live one:
``claimed_at`` is re-set and ``reclaims`` counted), ENQUEUED (claimed and sent), MISSED
(the scheduler was down past the grace window) or FAILED (the send failed, or the
dispatcher found its target actor missing; ``error`` says why). ``schedule_tick_runs``
links a tick to the job_runs it produced (its dispatcher run and every per-tenant run)
by ``message_id``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint, func, text
from sqlalchemy.orm import Mapped, mapped_column

from jobcore.models import Base


class ScheduleTick(Base):
    __tablename__ = "schedule_ticks"
    __table_args__ = (
        UniqueConstraint("schedule_name", "tick_at", name="uq_schedule_ticks_schedule_tick"),
        Index("ix_schedule_ticks_schedule_status", "schedule_name", "status", "tick_at"),
        Index("ix_schedule_ticks_claimed", "claimed_at", postgresql_where=text("status = 'CLAIMED'")),
        Index("ix_schedule_ticks_reclaimed", "claimed_at", postgresql_where=text("reclaims > 0")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    schedule_name: Mapped[str] = mapped_column(String(200))
    tick_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16))
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    catch_up: Mapped[bool] = mapped_column(server_default="false")
    scheduler_id: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    claimed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    reclaims: Mapped[int] = mapped_column(Integer, server_default="0")


class ScheduleTickRun(Base):
    __tablename__ = "schedule_tick_runs"
    __table_args__ = (Index("ix_schedule_tick_runs_message_id", "message_id"),)

    tick_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("schedule_ticks.id", ondelete="CASCADE"),
                                         primary_key=True)
    message_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))  # "dispatcher" | "tenant"
