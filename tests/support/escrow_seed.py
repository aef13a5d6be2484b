"""Seeded tenant data for the escrow tests: users in every role, cases with parties,
disbursement requests, report requests, viewing caches and Huntington batches."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy.orm import Session

from actors.escrow.models import (
    ADMIN,
    CASE_MANAGER,
    ESCROW_SPECIALIST,
    IP,
    IP_REP,
    Case,
    CaseParty,
    DisbursementRequest,
    HuntingtonBatch,
    HuntingtonBatchItem,
    User,
)


@dataclass
class Seeded:
    users: dict[str, User] = field(default_factory=dict)
    cases: dict[str, Case] = field(default_factory=dict)


def seed_people_and_cases(session: Session, today: dt.date) -> Seeded:
    """Two active cases and one closed case, each with an IP, IP Rep, Case Manager and
    Escrow Specialist; two platform Admins; one inactive Case Manager."""
    s = Seeded()
    for key, role in [("ip_a", IP), ("rep_a", IP_REP), ("cm_a", CASE_MANAGER), ("es_a", ESCROW_SPECIALIST),
                      ("ip_b", IP), ("rep_b", IP_REP), ("cm_b", CASE_MANAGER), ("es_b", ESCROW_SPECIALIST),
                      ("cm_gone", CASE_MANAGER), ("admin1", ADMIN), ("admin2", ADMIN)]:
        user = User(email=f"{key}@seedtrust.test", name=key.replace("_", " ").title(), role=role,
                    active=key != "cm_gone", on_site=True)
        session.add(user)
        s.users[key] = user
    s.cases["a"] = Case(number="ST-1001", name="Alpha family", balance=Decimal("5000.00"),
                        minimum_balance=Decimal("10000.00"), scheduled_close_date=today)
    s.cases["b"] = Case(number="ST-1002", name="Beta family", balance=Decimal("25000.00"),
                        minimum_balance=Decimal("10000.00"), scheduled_close_date=today + dt.timedelta(days=1))
    s.cases["closed"] = Case(number="ST-0999", name="Closed family", status="CLOSED", balance=Decimal("0"),
                             minimum_balance=Decimal("10000.00"), scheduled_close_date=today)
    session.add_all(s.cases.values())
    session.flush()
    for case_key, suffix in (("a", "a"), ("b", "b"), ("closed", "a")):
        for role, user_key in ((IP, f"ip_{suffix}"), (IP_REP, f"rep_{suffix}"), (CASE_MANAGER, f"cm_{suffix}"),
                               (ESCROW_SPECIALIST, f"es_{suffix}")):
            session.add(CaseParty(case_id=s.cases[case_key].id, user_id=s.users[user_key].id, role=role))
    session.add(CaseParty(case_id=s.cases["a"].id, user_id=s.users["cm_gone"].id, role=CASE_MANAGER))
    session.commit()
    return s


def add_dr(session: Session, case: Case, requester: User, amount: str, auto_authorize_at: dt.datetime | None,
           status: str = "PENDING", payee: str = "Surrogate payee") -> DisbursementRequest:
    dr = DisbursementRequest(case_id=case.id, requested_by=requester.id, payee=payee, amount=Decimal(amount),
                             status=status, auto_authorize_at=auto_authorize_at)
    session.add(dr)
    session.commit()
    return dr


def add_batch(session: Session, case: Case, amounts: list[str]) -> tuple[HuntingtonBatch, list[HuntingtonBatchItem]]:
    batch = HuntingtonBatch()
    session.add(batch)
    session.flush()
    items = [HuntingtonBatchItem(batch_id=batch.id, case_id=case.id, kind="ACH" if i % 2 == 0 else "WIRE",
                                 amount=Decimal(a), beneficiary=f"Beneficiary {i}", account_token=f"tok_{i:04d}")
             for i, a in enumerate(amounts)]
    session.add_all(items)
    session.commit()
    return batch, items
