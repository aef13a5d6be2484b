"""The worker entry point: ``dramatiq actors`` (and ``periodiq actors``).

Importing this package configures the process-wide dramatiq broker (a Redis broker from
``REDIS_URL`` with the platform's full middleware stack) and declares every actor.
Services that send jobs import it too, so ``send()`` is validated and tracked.
"""

from __future__ import annotations

import dramatiq

from jobcore.broker import build_broker
from middleware import default_stack

broker = build_broker(middleware=default_stack())
dramatiq.set_broker(broker)

# Actor modules: importing them declares the actors on ``broker``.
from actors import casemgmt, escrow, examples  # noqa: E402
from periodic import actors as periodic_actors  # noqa: E402

__all__ = ["broker", "casemgmt", "escrow", "examples", "periodic_actors"]
