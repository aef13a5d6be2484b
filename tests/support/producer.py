"""A producer process: ``python -m tests.support.producer OUT COUNT [--rate R] [--seconds S]``.

Sends COUNT ``RECORDED`` jobs at about R per second (0: as fast as it can) through the
platform's ``send`` path and appends one JSON line per *acknowledged* send to OUT:
``{"id", "at", "errors", "error"}``. A send that raises ``ServiceUnavailable`` (Redis
failing over) is sent again, the same message, until it is acknowledged (the platform
never enqueues one message twice); ``errors`` counts the raises."""

from __future__ import annotations

import argparse
import json
import sys
import time

import jobplatform
from jobcore.errors import ServiceUnavailable
from tests.support.failover_actors import recorded


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("count", type=int)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--seconds", type=float, default=0.0)
    parser.add_argument("--keyed", action="store_true", help="give each job an idempotency key")
    parser.add_argument("--give-up-s", type=float, default=90.0)
    args = parser.parse_args()
    start = time.monotonic()
    with open(args.out, "a", buffering=1) as out:
        for i in range(args.count):
            if args.rate:
                time.sleep(max(0.0, start + i / args.rate - time.monotonic()))
            message = recorded.message(args.seconds, f"k{i}" if args.keyed else None)
            errors, first_error, deadline = 0, "", time.monotonic() + args.give_up_s
            while True:
                try:
                    jobplatform.broker.enqueue(message)
                    break
                except ServiceUnavailable as exc:
                    errors += 1
                    first_error = first_error or str(exc)
                    if time.monotonic() > deadline:
                        print(f"gave up on {message.message_id}: {exc}", file=sys.stderr)
                        return 1
                    time.sleep(0.05)
            out.write(json.dumps({"id": message.message_id, "at": time.time(), "errors": errors,
                                  "error": first_error}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
