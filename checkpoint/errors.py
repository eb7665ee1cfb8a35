"""The errors a person can cause or fix, by kind, each with its exit code.

Every command maps these to one line on stderr and the exit code of its kind (docs/errors.md's
exit-code table), so the CLI needs no list of every exception class, and importing this module
costs nothing at start-up.
"""

from __future__ import annotations

#: The exit-code table of docs/errors.md, in one place.
EXIT_OK = 0
EXIT_FAILED = 1  # the run failed, or an unexpected error (logged, never a traceback)
EXIT_USAGE = 2  # bad input: option, argument, value, environment variable
EXIT_NOT_FOUND = 3  # no such thread, file or folder
EXIT_CONFLICT = 4  # the thread is not in a state that allows this (not at a gate, decided, busy, changed)
EXIT_UNAVAILABLE = 5  # the database or the model cannot be reached or started
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGTERM: stopped at a step boundary, resumable


class SignoffError(Exception):
    """Base of the errors whose message tells the person what to do."""

    exit_code = EXIT_FAILED


class InvalidInput(SignoffError, ValueError):
    """Bad input from the command line, a file or the environment."""

    exit_code = EXIT_USAGE


class NotFound(SignoffError, LookupError):
    """What was named does not exist."""

    exit_code = EXIT_NOT_FOUND


class Conflict(SignoffError, RuntimeError):
    """The thread's state does not allow this now (another person or process got there first)."""

    exit_code = EXIT_CONFLICT


class Unavailable(SignoffError, RuntimeError):
    """A service Signoff needs (database, model server) cannot be reached or started."""

    exit_code = EXIT_UNAVAILABLE
