"""An aiosmtpd SMTP server on loopback that refuses chosen recipients (550) or drops the
connection on chosen subjects (421), and can be stopped (connections refused: an SMTP
outage) and started again on the same port. Used by both products' outbox tests."""

from __future__ import annotations

import email
import email.policy
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest

from tests.support.chaos import free_port


@dataclass
class PickySmtp:
    host: str
    port: int
    refuse: set[str] = field(default_factory=set)          # RCPT TO answered "550 5.1.1"
    drop_subjects: set[str] = field(default_factory=set)   # DATA answered "421", connection closed
    messages: list[EmailMessage] = field(default_factory=list)
    rcpt_refused: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    controller: Any = None

    def start(self) -> None:
        from aiosmtpd.controller import Controller

        sink = self

        class Handler:
            async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                                  rcpt_options: list[str]) -> str:
                if address in sink.refuse:
                    with sink.lock:
                        sink.rcpt_refused.append(address)
                    return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
                msg = email.message_from_bytes(envelope.original_content or envelope.content,
                                               policy=email.policy.default)
                if str(msg["Subject"]) in sink.drop_subjects:
                    return "421 4.3.0 Service shutting down, closing transmission channel"
                with sink.lock:
                    sink.messages.append(msg)  # type: ignore[arg-type]
                return "250 Message accepted for delivery"

        self.controller = Controller(Handler(), hostname=self.host, port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def received(self) -> list[EmailMessage]:
        with self.lock:
            return list(self.messages)

    def subjects(self) -> list[str]:
        return sorted(str(m["Subject"]) for m in self.received())


@pytest.fixture()
def picky_smtp() -> Iterator[PickySmtp]:
    """A running :class:`PickySmtp` on a free loopback port (stopped at the end)."""
    server = PickySmtp("127.0.0.1", free_port())
    server.start()
    yield server
    server.stop()
