"""Refuse bad messages at ``send()`` and never run a message whose arguments don't fit.

At enqueue: an unknown actor or arguments that do not bind to the actor's signature
raise an :class:`~jobcore.errors.EnqueueError` (a dramatiq ``MiddlewareError``, so it
reaches the caller instead of being swallowed); arguments that cannot be encoded, or that
the ledger cannot store, are refused by the broker and the ledger right after.
At the worker: a message whose arguments do not bind (sent by a stale or foreign
producer) is failed without retries and recorded as REJECTED with the reason.
"""

from __future__ import annotations

import inspect
from typing import Any

from dramatiq import Middleware

from jobcore.errors import InvalidArguments, Rejected, UnknownActor
from jobcore.message_state import state


class Validation(Middleware):
    """Validates actor name, signature and encodability of every new message."""

    def __init__(self) -> None:
        self._signatures: dict[str, inspect.Signature] = {}
        # Whether arguments bind depends only on how many are positional and which keyword
        # names are given, never on their values: cache the verdict per shape (binding a
        # signature costs more than the rest of a no-op job's hooks together).
        self._shapes: dict[tuple[str, int, frozenset[str]], str | None] = {}

    @property
    def actor_options(self) -> set[str]:
        return set()

    def _signature(self, actor: Any) -> inspect.Signature | None:
        sig = self._signatures.get(actor.actor_name)
        if sig is None:
            try:
                sig = inspect.signature(actor.fn)
            except (TypeError, ValueError):
                return None
            self._signatures[actor.actor_name] = sig
        return sig

    def bind_error(self, actor: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        """The reason ``args``/``kwargs`` do not fit ``actor``, or None if they do."""
        shape = (actor.actor_name, len(args), frozenset(kwargs))
        if shape in self._shapes:
            return self._shapes[shape]
        sig = self._signature(actor)
        if sig is None:
            return None
        try:
            sig.bind(*args, **kwargs)
            problem = None
        except TypeError as exc:
            problem = f"arguments do not fit {actor.actor_name}{sig}: {exc}"
        if len(self._shapes) < 10_000:
            self._shapes[shape] = problem
        return problem

    def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        if message.options.get("ledger_tracked"):
            return  # a retry or delayed move of a message validated when it was sent
        actor = broker.actors.get(message.actor_name)
        if actor is None:
            known = ", ".join(sorted(broker.actors)) or "none"
            raise UnknownActor(f"unknown actor {message.actor_name!r} (declared actors: {known})")
        problem = self.bind_error(actor, tuple(message.args), dict(message.kwargs))
        if problem:
            raise InvalidArguments(problem)

    def before_process_message(self, broker: Any, message: Any) -> None:
        actor = broker.actors.get(message.actor_name)
        if actor is None:
            return  # dramatiq dead-letters unknown actors before this point
        problem = self.bind_error(actor, tuple(message.args), dict(message.kwargs))
        if problem:
            st = state(message)
            st.skip_reason, st.skip_detail = "REJECTED", problem
            message.fail()
            raise Rejected(problem)
