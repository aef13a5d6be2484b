"""``python -m metrics``: the exporter process (EXPORTER_HOST:EXPORTER_PORT, default 127.0.0.1:9300)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from metrics.server import build_registry, serve
from middleware.log_redaction import install_log_redaction


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
    registry = build_registry()
    serve(args.host, args.port, registry)
    stop.wait()
    logging.getLogger("metrics").info("Exporter stopping")
    return 0


if __name__ == "__main__":
    sys.exit(main())
