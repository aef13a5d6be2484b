"""The bank-gateway protocol (there is no public Huntington API) and its client.

HTTP JSON, one resource:

``POST /transfers`` with ``{"idempotency_key", "kind": "ACH"|"WIRE", "amount": "123.45",
"beneficiary", "account_token", "reference"}``
    201 ``{"transfer": {...}, "created": true}`` -- committed now;
    200 ``{"transfer": {...}, "created": false}`` -- this key was committed before (no new transfer);
    409 -- the key was used with a different body; 422 -- invalid, rejected, nothing committed;
    5xx -- the gateway failed *before* committing (the contract the simulator honours).
``GET /transfers/<idempotency_key>``
    200 ``{"transfer": {...}}`` or 404 ``{"error": "not_found"}``.

A transfer is ``{"transfer_id", "idempotency_key", "status": "COMPLETED", "kind", "amount",
"beneficiary", "account_token", "reference", "created_at"}``.

The client maps every way a call can end to one of: a result, :class:`BankRejected`
(definitely not sent), :class:`BankUnavailable` (definitely not committed), or
:class:`jobcore.errors.OutcomeUnknown` (the request may have been committed: time-out,
connection dropped after sending); the last must be reconciled by key, never re-sent blind.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import requests
from urllib3.exceptions import NewConnectionError

from jobcore.errors import ExternalServiceError, OutcomeUnknown
from jobcore.http import DeadlineSession
from jobcore.settings import Settings, get_settings


class BankError(ExternalServiceError):
    """Base of the bank gateway's definite failures."""


class BankRejected(BankError):
    """The gateway refused the transfer (4xx); nothing was committed; retrying will not help."""


class BankUnavailable(BankError):
    """The gateway failed before committing (5xx, connection refused); safe to retry later."""


@dataclass(frozen=True)
class TransferRequest:
    idempotency_key: str
    kind: str
    amount: Decimal
    beneficiary: str
    account_token: str
    reference: str

    def to_json(self) -> dict[str, str]:
        return {"idempotency_key": self.idempotency_key, "kind": self.kind, "amount": f"{self.amount:.2f}",
                "beneficiary": self.beneficiary, "account_token": self.account_token, "reference": self.reference}


@dataclass(frozen=True)
class Transfer:
    transfer_id: str
    idempotency_key: str
    status: str
    created: bool = False

    @classmethod
    def from_json(cls, data: dict[str, Any], created: bool = False) -> Transfer:
        return cls(str(data["transfer_id"]), str(data["idempotency_key"]), str(data["status"]), created)


class BankGatewayClient:
    """Client of the bank gateway; one per job run (a ``requests.Session`` inside)."""

    def __init__(self, base_url: str, *, timeout: float = 10.0, http: requests.Session | None = None,
                 deadline: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        # timeout bounds each read; the deadline bounds the whole call (a trickling gateway).
        self.http = http or DeadlineSession(deadline)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> BankGatewayClient:
        """Client for BANK_GATEWAY_URL with BANK_TIMEOUT per read and HTTP_DEADLINE per call."""
        s = settings or get_settings()
        return cls(s.bank_gateway_url, timeout=s.bank_timeout, deadline=s.http_deadline)

    def submit(self, request: TransferRequest, *, headers: dict[str, str] | None = None) -> Transfer:
        """Submit one transfer; repeated keys are de-duplicated by the gateway."""
        url = f"{self.base_url}/transfers"
        try:
            resp = self.http.post(url, json=request.to_json(), timeout=self.timeout, headers=headers)
        except requests.ConnectionError as exc:
            if _never_connected(exc):
                raise BankUnavailable(f"bank gateway unreachable: {exc}") from exc
            raise OutcomeUnknown(f"connection lost during transfer {request.idempotency_key}: {exc}") from exc
        except requests.Timeout as exc:
            raise OutcomeUnknown(f"no answer for transfer {request.idempotency_key} "
                                 f"within {self.timeout}s") from exc
        except requests.RequestException as exc:
            raise OutcomeUnknown(f"transfer {request.idempotency_key}: {exc}") from exc
        if resp.status_code in (200, 201):
            return Transfer.from_json(resp.json()["transfer"], created=resp.status_code == 201)
        if resp.status_code >= 500:
            raise BankUnavailable(f"bank gateway answered {resp.status_code} for {request.idempotency_key}")
        raise BankRejected(f"bank gateway rejected {request.idempotency_key}: {resp.status_code} {resp.text[:200]}")

    def get(self, idempotency_key: str) -> Transfer | None:
        """The transfer committed under ``idempotency_key``, or None if the bank has none.
        Raises :class:`BankError`/:class:`OutcomeUnknown` when the bank cannot tell."""
        try:
            resp = self.http.get(f"{self.base_url}/transfers/{idempotency_key}", timeout=self.timeout)
        except requests.RequestException as exc:
            raise BankUnavailable(f"cannot query transfer {idempotency_key}: {exc}") from exc
        if resp.status_code == 404:
            return None
        if resp.status_code == 200:
            return Transfer.from_json(resp.json()["transfer"])
        raise BankUnavailable(f"bank gateway answered {resp.status_code} to query {idempotency_key}")


def _never_connected(exc: BaseException) -> bool:
    """True when the TCP connection was never established (so nothing was sent)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, NewConnectionError | ConnectionRefusedError):
            return True
        reason = getattr(cur, "reason", None)
        if isinstance(reason, BaseException) and id(reason) not in seen:
            cur = reason
            continue
        args0 = cur.args[0] if cur.args and isinstance(cur.args[0], BaseException) else None
        cur = args0 or cur.__cause__ or cur.__context__
    return False
