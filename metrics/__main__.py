"""``python -m metrics``: the exporter process (EXPORTER_HOST:EXPORTER_PORT, default 127.0.0.1:9300)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from metrics.server import build_registry, serve
from middleware.log_redaction import install_log_redaction


def _redis_usable(settings: Any) -> bool:
    """False (after one line, password masked) when Redis refuses this process's
    credentials: a configuration error, unlike an outage, which the exporter rides out
    (``jobs_exporter_source_up{source="redis"}`` is 0 meanwhile)."""
    import redis

    from jobcore.redis_client import describe_error, make_client

    try:
        make_client(settings, socket_timeout=5).ping()
    except redis.AuthenticationError as exc:
        print(f"error: {describe_error(exc, settings)}", file=sys.stderr, flush=True)
        return False
    except redis.RedisError as exc:
        logging.getLogger("metrics").warning("Redis not reachable yet: %s", describe_error(exc, settings))
    return True


def main(argv: list[str] | None = None) -> int:
    from jobcore.settings import get_settings

    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m metrics", description="Prometheus exporter of the job platform")
    parser.add_argument("--host", default=settings.exporter_host)
    parser.add_argument("--port", type=int, default=settings.exporter_port)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] [PID %(process)d] [%(name)s] "
                        "[%(levelname)s] %(message)s")
    install_log_redaction()  # scrape errors log exception messages and tracebacks
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if not _redis_usable(settings):
        return 3
    registry = build_registry()
    serve(args.host, args.port, registry)
    stop.wait()
    logging.getLogger("metrics").info("Exporter stopping")
    return 0


if __name__ == "__main__":
    sys.exit(main())
