"""``docs/configuration.md`` generated from the settings object, so it cannot drift.

Every field of :class:`jobcore.settings.Settings` becomes a row: its environment
variable, its default and the comment written above it in ``settings.py``; the
``# --- name ---`` lines there become sections.

    .venv/bin/python -m jobcore.settings_doc > docs/configuration.md

``tests/unit/test_docs.py`` fails when the committed file differs from this output.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import MISSING, fields
from pathlib import Path

from jobcore.settings import Settings

_SECTION = re.compile(r"^#\s*---\s*(.+?)\s*-*\s*$")

HEADER = """# Configuration

Every process and command reads one typed settings object (`jobcore/settings.py`) from
the environment, overlaid on the `.env` file in the repository root (what `.ci/up`
writes; `JOBS_ENV_FILE` names another file, or none when empty). A variable that is
set in the environment wins over `.env`. A value that does not parse stops the process
with one line naming the variable. Secrets (marked *secret*) are never printed, logged
or shown by the console.

This page is generated from the settings object (`python -m jobcore.settings_doc`);
`tests/unit/test_docs.py` keeps it in step.
"""


def _comments(source: str) -> dict[str, tuple[str | None, str]]:
    """Field name -> (section it is in, the comment block right above it)."""
    lines = source.splitlines()
    tree = ast.parse(source)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings")
    out: dict[str, tuple[str | None, str]] = {}
    section: str | None = None
    last_end = cls.lineno
    for node in cls.body:
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            last_end = getattr(node, "end_lineno", last_end) or last_end
            continue
        block: list[str] = []
        for raw in lines[last_end:node.lineno - 1]:
            text = raw.strip()
            match = _SECTION.match(text)
            if match:
                section, block = match.group(1).strip(" -"), []
            elif text.startswith("#"):
                block.append(text.lstrip("#").strip())
            elif not text:
                block = []
        out[node.target.id] = (section, " ".join(block))
        last_end = node.end_lineno or node.lineno
    return out


def _default(name: str) -> str:
    f = next(x for x in fields(Settings) if x.name == name)
    if not f.repr:
        return "*secret*"
    value = f.default if f.default is not MISSING else (f.default_factory() if f.default_factory is not MISSING
                                                        else "")
    if isinstance(value, bool):
        return "`1`" if value else "`0`"
    if isinstance(value, tuple):
        return f"`{','.join(value)}`" if value else "(none)"
    return f"`{value}`" if value != "" else "(empty)"


def render() -> str:
    """The configuration page."""
    source = Path(sys.modules[Settings.__module__].__file__ or "").read_text()
    comments = _comments(source)
    out = [HEADER]
    current: str | None = "—"
    for f in fields(Settings):
        section, comment = comments.get(f.name, (None, ""))
        if section != current:
            title = (section or "services and basics")
            out += ["", f"## {title[0].upper() + title[1:]}", "", "| variable | default | meaning |",
                    "|---|---|---|"]
            current = section
        meaning = comment.replace("|", "\\|") or "—"
        out.append(f"| `{f.name.upper()}` | {_default(f.name)} | {meaning} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
