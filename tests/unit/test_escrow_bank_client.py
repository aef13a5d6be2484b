"""The bank-gateway client's mapping of every outcome, against the simulator run in-process
on 127.0.0.1 (no external services)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from decimal import Decimal

import pytest

from actors.escrow.bank_gateway import BankGatewayClient, BankRejected, BankUnavailable, TransferRequest
from actors.escrow.bank_simulator import BankState, make_server
from jobcore.errors import OutcomeUnknown
from tests.support.chaos import free_port

pytestmark = pytest.mark.unit


@pytest.fixture()
def sim() -> Iterator[tuple[str, BankState]]:
    server, state = make_server(0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", state
    server.shutdown()
    server.server_close()


def _req(key: str = "k1", amount: str = "10.00") -> TransferRequest:
    return TransferRequest(key, "ACH", Decimal(amount), "Jane Roe", "tok_1", "batch 1 item 1")


def test_submit_commits_once_per_key_and_query_finds_it(sim):
    url, state = sim
    client = BankGatewayClient(url, timeout=2)
    first = client.submit(_req())
    again = client.submit(_req())
    assert first.created and not again.created and first.transfer_id == again.transfer_id
    assert client.get("k1") == type(first)(first.transfer_id, "k1", "COMPLETED")
    assert client.get("nope") is None
    assert len(state.transfers) == 1 and state.submits["k1"] == 2


def test_key_reused_with_another_body_is_rejected(sim):
    url, _ = sim
    client = BankGatewayClient(url, timeout=2)
    client.submit(_req())
    with pytest.raises(BankRejected, match="409"):
        client.submit(_req(amount="11.00"))


def test_invalid_transfer_is_rejected_without_commit(sim):
    url, state = sim
    with pytest.raises(BankRejected, match="422"):
        BankGatewayClient(url, timeout=2).submit(_req(amount="0"))
    assert state.transfers == {}


def test_5xx_is_unavailable_and_commits_nothing(sim):
    url, state = sim
    state.faults.append("error=503")
    with pytest.raises(BankUnavailable, match="503"):
        BankGatewayClient(url, timeout=2).submit(_req())
    assert state.transfers == {}


def test_dropped_response_after_commit_is_outcome_unknown(sim):
    url, state = sim
    state.faults.append("drop")
    with pytest.raises(OutcomeUnknown):
        BankGatewayClient(url, timeout=2).submit(_req())
    assert "k1" in state.transfers  # it did go through


def test_timeout_is_outcome_unknown(sim):
    url, state = sim
    with pytest.raises(OutcomeUnknown, match="within 0.5s"):
        BankGatewayClient(url, timeout=0.5).submit(_req(), headers={"X-Fault": "timeout=1.5"})
    assert state.transfers == {}


def test_delay_commits_and_answers(sim):
    url, state = sim
    assert BankGatewayClient(url, timeout=3).submit(_req(), headers={"X-Fault": "delay=0.3"}).created


def test_refused_connection_is_unavailable_not_unknown():
    with pytest.raises(BankUnavailable, match="unreachable"):
        BankGatewayClient(f"http://127.0.0.1:{free_port()}", timeout=2).submit(_req())
