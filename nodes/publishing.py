"""Publishing a signed-off document: one `documents` row per thread and one markdown file.

Exactly once: the row is keyed by thread, and the file is written inside the transaction that
inserts the row, so a row always means a complete file. A re-run (second approve, a resume
after a crash, two processes at once) finds the row and rewrites nothing: the file at the
row's path is checked and, only if it is missing or differs, written again from the row.
Files are written to a temporary name and renamed, so a reader never sees half a document.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from langgraph.runtime import Runtime
from psycopg_pool import ConnectionPool

from checkpoint.settings import Settings
from nodes.tools import current_thread_id, record_event_on


@dataclass(frozen=True)
class Published:
    document_id: int
    path: Path
    created: bool


def resolve_out_dir(out: str | os.PathLike[str] | None) -> str:
    """Where a thread publishes, fixed when it starts (so a resume elsewhere writes the same
    place): `--out DIR`, else `<SIGNOFF_HOME>/published`. Checked now, by really creating a
    file there, so an unwritable folder is refused before the thread starts rather than after
    a person has approved its document; ValueError says what is wrong."""
    path = Path(out).expanduser() if out else Settings.from_env().home / "published"
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} is a file, not a folder: pass another --out")
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise ValueError(f"{path} cannot be created ({existing} is not a folder): pass another --out")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise ValueError(f"cannot write to {path} ({exc.strerror or exc.__class__.__name__} in {existing}): pass another --out") from None
    return str(path.resolve())


def title_of(markdown: str) -> str:
    """The first `# ` heading, else the first line."""
    match = re.search(r"^# (.+)$", markdown, re.MULTILINE)
    line = match[1] if match else next((line for line in markdown.splitlines() if line.strip()), "untitled")
    return line.strip().strip("#").strip()[:200] or "untitled"


def file_name(title: str, thread_id: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60].rstrip("-") or "document"
    return f"{slug}-{thread_id}.md"


def write_atomic(path: Path, text: str) -> bool:
    """Write text to path via a temporary file and rename; False if it was already there."""
    data = text.encode("utf-8")
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, unlike mkstemp's 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def publish(pool: ConnectionPool, thread_id: str, *, graph: str, body: str, out_dir: str) -> Published:
    """Store the thread's document and write its file, or return what an earlier call stored."""
    title = title_of(body)
    path = Path(out_dir) / file_name(title, thread_id)
    sha = hashlib.sha256(body.encode("utf-8")).hexdigest()
    with pool.connection() as conn, conn.transaction():
        row = conn.execute(
            "INSERT INTO documents (thread_id, graph, title, body, content_sha, path) VALUES (%s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (thread_id) DO NOTHING RETURNING id, body, path",
            (thread_id, graph, title, body, sha, str(path)),
        ).fetchone()
        created = row is not None
        if row is None:
            row = conn.execute("SELECT id, body, path FROM documents WHERE thread_id = %s", (thread_id,)).fetchone()
        write_atomic(Path(row["path"]), row["body"])  # inside the transaction: no row without its file
        if created:  # audited in the same transaction: never a document the audit misses
            record_event_on(conn, thread_id, "signoff", "document_published", {"document_id": row["id"], "path": row["path"]})
    return Published(int(row["id"]), Path(row["path"]), created)


def publish_node(graph: str) -> Callable[[dict[str, Any], Runtime[Any]], dict[str, Any]]:
    """The graph node that publishes the signed-off `document` to the thread's `out_dir`.

    A write that fails (folder removed or made read-only since the thread started, disk full)
    is not a dead end: nothing is stored (the row and the file are one transaction), the
    failure is audited, and the thread goes back to its gate with the error shown, where a
    person approves again once the folder is fixed, rejects, or lets the deadline discard it."""

    def publish_document(state: dict[str, Any], runtime: Runtime[Any]) -> dict[str, Any]:
        pool, thread_id = runtime.context.pool, current_thread_id()
        try:
            published = publish(pool, thread_id, graph=graph, body=state["document"], out_dir=state["out_dir"])
        except OSError as exc:
            error = f"publishing to {state['out_dir']} failed ({exc.strerror or exc.__class__.__name__}): fix the folder, then approve again"
            with pool.connection() as conn:
                record_event_on(conn, thread_id, "signoff", "publish_failed", {"error": error[:300]})
            return {"publish_error": error, "needs_human": True, "error": error, "warnings": [error]}
        update: dict[str, Any] = {"outcome": "published", "path": str(published.path), "document_id": published.document_id}
        if state.get("publish_error"):  # an earlier attempt failed: its error is history now
            update.update(publish_error=None, needs_human=False, error=None)
        return update

    return publish_document


def route_after_publish(state: dict[str, Any]) -> str:
    """Back to the gate after a failed write, else the end."""
    return "retry_gate" if state.get("publish_error") else "end"
