"""The terminal a `signoff` command writes to: its two consoles, and how every error reaches
them as one line (or one JSON document) with the exit code of its kind (checkpoint/errors.py).

Kept apart from cli.py so the modules that run, decide and render for a command (graphs/
running.py, deciding.py, the *_display modules) print and fail exactly as the commands
themselves do. Imports nothing heavier than cli.py already loads (typer, rich's console).
"""

from __future__ import annotations

import functools
import io
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import typer
import typer.core
from rich.console import Console
from rich.markup import escape

from checkpoint.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_UNAVAILABLE, SignoffError
from console.display import safe_line

_click: Any = getattr(typer.core, "_click", None) or getattr(typer.core, "click")  # typer vendors click since 0.20


class PipeSafeStdout(io.TextIOBase):
    """stdout that survives its reader going away (`signoff approve T | head -1`): once the
    pipe is closed, output is dropped and the command finishes its work, instead of dying
    half-way with a decision recorded and the thread not run on. Resolves sys.stdout on every
    call, so test runners that swap it still capture the output."""

    broken = False

    def write(self, text: str) -> int:
        if not PipeSafeStdout.broken:
            try:
                sys.stdout.write(text)
            except BrokenPipeError:
                self._broke()
        return len(text)

    def flush(self) -> None:
        if not PipeSafeStdout.broken:
            try:
                sys.stdout.flush()
            except BrokenPipeError:
                self._broke()

    def isatty(self) -> bool:
        return not PipeSafeStdout.broken and sys.stdout.isatty()

    def fileno(self) -> int:
        return sys.stdout.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(sys.stdout, "encoding", None) or "utf-8"

    @staticmethod
    def _broke() -> None:
        PipeSafeStdout.broken = True
        try:  # so the interpreter's own last flush of stdout finds somewhere to write
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError, io.UnsupportedOperation):
            pass


out = Console(file=PipeSafeStdout(), highlight=False)
err = Console(stderr=True, highlight=False)


class OneLineUsageErrors(typer.core.TyperGroup):
    """Usage errors (unknown option, missing argument, malformed value) as one line on stderr,
    exit code 2, like every other error here, instead of click's multi-line usage block."""

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None, standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        wants_json = "--json" in (sys.argv[1:] if args is None else list(args))
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except _click.exceptions.ClickException as exc:
            ctx = getattr(exc, "ctx", None)
            if type(exc).__name__ == "NoArgsIsHelpError":  # `signoff`, `signoff db`: the help, as before
                exc.show()
            elif wants_json:  # a script asked for JSON: its usage error is JSON too
                from console.json_output import error_document

                sys.stderr.write(error_document(exc.format_message(), exc.exit_code) + "\n")
            else:
                hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
                err.print(f"error: {safe_line(exc.format_message())}{escape(hint)}", soft_wrap=True)
            sys.exit(exc.exit_code)
        except (typer.Abort, KeyboardInterrupt):
            err.print("error: interrupted")
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(code if isinstance(code, int) else 0)


class _JsonMode:
    """Whether the running command was given --json (set by `friendly` for each command)."""

    on = False


def fail(message: str, code: int = EXIT_FAILED) -> None:
    if _JsonMode.on:  # `{"error": ...}` on stderr, same exit code
        from console.json_output import error_document

        sys.stderr.write(error_document(message, code) + "\n")
    else:
        err.print(f"error: {safe_line(message)}", soft_wrap=True)
    raise typer.Exit(code)


def emit(document: Any) -> None:
    """A --json command's one document, on stdout (pipe-safe, never rewrapped by rich)."""
    from console.json_output import dumps

    out.file.write(dumps(document) + "\n")
    out.file.flush()


def friendly(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn every error into one line on stderr and the exit code of its kind (docs/errors.md's
    table); an unexpected one is logged with its traceback, which never reaches the terminal."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _JsonMode.on = bool(kwargs.get("as_json"))
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, _click.exceptions.ClickException):
            raise
        except SignoffError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", EXIT_INTERRUPTED)
        except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
            from checkpoint.database import is_connection_error

            if is_connection_error(exc):
                fail(f"lost the database ({first_line(exc)}): check it is running, then retry; saved work is kept", EXIT_UNAVAILABLE)
            fail(f"unexpected error: {exc.__class__.__name__}: {first_line(exc)} (details in {log_unexpected(exc)}); saved work is kept", EXIT_FAILED)

    return wrapper


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else exc.__class__.__name__


def log_unexpected(exc: BaseException) -> str:
    """Append the traceback to SIGNOFF_HOME/logs/errors.log; the path, for the one line."""
    import traceback

    try:
        home = Path(os.environ.get("SIGNOFF_HOME") or "~/.signoff").expanduser()
        path = home / "logs" / "errors.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as log:
            log.write(f"--- {datetime.now(timezone.utc).isoformat()} {' '.join(sys.argv[:3])}\n")
            log.write("".join(traceback.format_exception(exc)))
        return str(path)
    except OSError:
        return "no log: SIGNOFF_HOME is not writable"


def failure_reason(exc: Exception) -> str:
    """Why one thread of a sweep (recover, expire) failed: a Signoff error's own line, else the
    exception's first line and where its traceback was logged."""
    return str(exc) if isinstance(exc, SignoffError) else f"{exc.__class__.__name__}: {first_line(exc)} (details in {log_unexpected(exc)})"


def log_line_writer(console: Console) -> Callable[[str], None]:
    """How a long-running process writes its log lines to `console`'s stream: through rich
    on a terminal, else as plain text with the same content (untrusted parts made visible,
    never raw), flushed a line at a time. `signoff serve` logs a line per request, and
    rendering each through rich cost it a fourteenth of its CPU under load."""
    from console.display import visible

    if console.is_terminal:
        return lambda line: console.print(safe_line(line), soft_wrap=True)
    import threading

    stream, lock = console.file, threading.Lock()  # request threads and webhook senders log too

    def plain(line: str) -> None:
        text = visible(line, one_line=True) + "\n"
        with lock:
            stream.write(text)
            stream.flush()

    return plain
