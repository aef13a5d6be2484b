"""``jobctl``: the one operator command line (``python -m cli`` is the same).

Every command has ``--help``; listing commands print tables (plain text when piped) or
JSON with ``--json``. Nothing printed contains argument values the redactor masks: the
ledger only stores redacted arguments. Shell completion: ``jobctl completion bash``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from cli.errors import describe
from cli.output import error

F = TypeVar("F", bound=Callable[..., Any])


def json_option(fn: F) -> F:
    """``--json``: print JSON instead of a table."""
    return click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")(fn)


def operator_option(fn: F) -> F:
    return click.option("--operator", help="who is acting (default: the login user); recorded in "
                                           "operator_actions")(fn)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def jobctl() -> None:
    """Operate the job platform: runs, queues, schedules, tenants, the console."""


@jobctl.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script: eval "$(jobctl completion bash)"."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    if cls is None:  # pragma: no cover - click ships all three
        raise click.UsageError(f"no completion for {shell}")
    click.echo(cls(jobctl, {}, "jobctl", "_JOBCTL_COMPLETE").source())


@jobctl.command("console")
@click.option("--host", help="default: CONSOLE_HOST (127.0.0.1)")
@click.option("--port", type=int, help="default: CONSOLE_PORT (9400)")
def console_command(host: str | None, port: int | None) -> None:
    """Serve the operator console (the same as python -m console)."""
    from console.__main__ import serve

    sys.exit(serve(host, port))


def _register() -> None:
    from cli import demo, domain, queues, runs, schedules, tenants

    for module in (runs, queues, schedules, tenants, domain, demo):
        module.register(jobctl)


_register()


def main(argv: Sequence[str] | None = None) -> int:
    """The ``jobctl`` entry point: operational errors are one line, never a traceback."""
    from middleware.log_redaction import install_log_redaction

    # Warnings of the libraries go to stderr, through the redactor like every process's logs.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    install_log_redaction()
    settings = None
    try:
        from jobcore.settings import get_settings

        settings = get_settings()
        result = jobctl.main(args=list(argv) if argv is not None else None, prog_name="jobctl",
                             standalone_mode=False)
        return int(result or 0)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        return 130
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        line = describe(exc, settings)
        if line is None:
            # A bug, not an operational error: its traceback goes through the redacting
            # log handler (an exception message can carry a secret).
            command = next((a for a in (argv if argv is not None else sys.argv[1:]) if not a.startswith("-")), "")
            logging.getLogger("jobctl").exception("jobctl %s failed", command)
            return 1
        error(line)  # describe() masked it (mask_url, the redactor)
        return 1


if __name__ == "__main__":
    sys.exit(main())
