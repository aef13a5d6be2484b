"""The composition root: importing it builds the platform for this process.

settings -> Redis client -> ledger strategy -> middleware stack -> broker (set as
dramatiq's broker) -> the actors and the periodic dispatchers. Every process entry point
goes through here: ``dramatiq jobplatform`` (or ``dramatiq actors``, which imports it),
the scheduler, the exporter, ``jobctl`` and the console; a service that sends jobs
imports it too, so ``send()`` is validated and tracked.
"""

from __future__ import annotations

from jobplatform.root import Platform, build

platform: Platform = build()
broker = platform.broker
ledger = platform.ledger
settings = platform.settings

__all__ = ["Platform", "broker", "ledger", "platform", "settings"]
