"""Queue depths as Redis holds them (ready, delayed, dead letters, stored payloads)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from jobcore.keys import Keys


def queue_names(client: Any, keys: Keys, declared: Iterable[str] = ()) -> list[str]:
    """Declared queues plus every queue that has payloads in Redis (even undeclared)."""
    names = set(declared)
    prefix = len(keys.namespace) + 1
    for key in client.scan_iter(match=keys.messages_pattern, count=500):
        name = (key.decode() if isinstance(key, bytes) else key)[prefix:-len(".msgs")]
        names.add(name.removesuffix(".DQ").removesuffix(".XQ"))
    return sorted(n for n in names if not n.startswith("__"))


def queue_depths(client: Any, keys: Keys, declared: Iterable[str] = ()) -> list[dict[str, Any]]:
    """One row per queue: ready, delayed (.DQ), dead letters (.XQ), stored payloads."""
    names = queue_names(client, keys, declared)
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.llen(keys.queue(name))
        pipe.hlen(keys.delayed_messages(name))
        pipe.zcard(keys.dead(name))
        pipe.hlen(keys.messages(name))
    values = pipe.execute() if names else []
    return [{"queue": name, "ready": values[4 * i], "delayed": values[4 * i + 1], "dead": values[4 * i + 2],
             "stored": values[4 * i + 3]} for i, name in enumerate(names)]
