"""The ``.env`` file ``.ci/up`` writes and every process and ``jobctl`` read
(:func:`jobcore.settings.env_file`; the environment wins over it).

* ``python -m cli.envfile exports .env [--skip K,...]``: ``export`` lines (shell-quoted)
  for the file's keys that the environment does not set, so a second ``.ci/up`` keeps the
  first one's choices and the user's edits;
* ``python -m cli.envfile write .env K...``: writes those keys from the environment (other
  lines of the file are kept), mode 0600 since it holds the demo's secrets.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from dotenv import dotenv_values

HEADER = ("# Written by .ci/up at {when}: the settings of the running demo, read by every process and by\n"
          "# jobctl from the repository root. The environment wins over this file. Edit freely: .ci/up\n"
          "# keeps values it finds here (and lines it does not manage).\n")


def quote(value: str) -> str:
    """A dotenv value: single quotes (no interpolation of ``$``) unless it holds one."""
    if "'" not in value and "\n" not in value:
        return f"'{value}'"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def read(path: Path) -> dict[str, str]:
    """The file's values (empty if it does not exist)."""
    if not path.is_file():
        return {}
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def exports(path: Path, environ: Mapping[str, str], skip: Sequence[str] = ()) -> str:
    """Shell ``export`` lines for the keys of ``path`` that ``environ`` lacks."""
    lines = [f"export {k}={shlex.quote(v)}" for k, v in read(path).items()
             if k not in environ and k not in skip and k.isidentifier()]
    return "\n".join(lines)


def write(path: Path, keys: Sequence[str], environ: Mapping[str, str]) -> None:
    """Write ``keys`` (those ``environ`` has) to ``path``, keeping its other lines; atomic."""
    managed = set(keys)
    kept: list[str] = []
    if path.is_file():
        for line in path.read_text().splitlines():
            name = line.split("=", 1)[0].strip().removeprefix("export ").strip()
            if line.startswith("#") or not line.strip() or name in managed:
                continue
            kept.append(line)
    body = HEADER.format(when=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))
    body += "".join(f"{k}={quote(environ[k])}\n" for k in keys if k in environ)
    if kept:
        body += "# --- not written by .ci/up ---\n" + "\n".join(kept) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".env.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(body)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cli.envfile", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("exports")
    p.add_argument("path", type=Path)
    p.add_argument("--skip", default="", help="comma-separated keys never exported")
    p = sub.add_parser("write")
    p.add_argument("path", type=Path)
    p.add_argument("keys", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "exports":
        print(exports(args.path, os.environ, [k for k in args.skip.split(",") if k]))
    else:
        write(args.path, args.keys, os.environ)
    return 0


if __name__ == "__main__":
    sys.exit(main())
