"""The research corpus: markdown and text files, chunked and searched with PostgreSQL full-text
search, so researchers quote passages with their sources instead of inventing them.

Ingest is idempotent by content hash: the same text added twice (under any name) is left
alone, and a changed file replaces the chunks of its earlier version.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path

from psycopg_pool import ConnectionPool

from checkpoint.errors import InvalidInput
from nodes.knowledge import files_in, read_text_file

SUFFIXES = (".md", ".markdown", ".txt")
#: Small enough that three passages and a question fit a 4k-token local model comfortably.
MAX_CHUNK_CHARS = 800
# Ingests of the corpus run one at a time (two first research runs may both find it empty).
_INGEST_LOCK_KEY = 0x636F72707573  # "corpus"


class CorpusError(InvalidInput):
    """A file cannot be ingested; the message names it."""


@dataclass(frozen=True)
class Chunk:
    heading: str
    body: str


@dataclass(frozen=True)
class CorpusFile:
    source: str
    title: str
    text: str

    @property
    def sha(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Passage:
    source: str
    title: str
    heading: str
    body: str
    rank: float

    @property
    def citation(self) -> str:
        section = self.heading.removeprefix(self.title).lstrip(" -–—")
        return f"{self.title}" + (f", \"{section}\"" if section else "") + f" (corpus: {self.source})"


@dataclass(frozen=True)
class IngestReport:
    added: int
    updated: int
    unchanged: int
    chunks: int


@dataclass(frozen=True)
class CorpusEntry:
    source: str
    title: str
    chunk_count: int
    loaded_at: datetime


# --- reading and chunking ------------------------------------------------------------------


def parse_file(path: Path) -> CorpusFile:
    """One corpus file; its title is the front matter's `title:`, the first `# ` heading, or its name."""
    if path.suffix.lower() not in SUFFIXES:
        raise CorpusError(f"{path}: not a markdown or text file ({', '.join(SUFFIXES)})")
    text = read_text_file(path, CorpusError).replace("\r\n", "\n")
    title = ""
    if text.startswith("---\n"):
        head, sep, rest = text[4:].partition("\n---")
        if sep:
            text = rest.lstrip("-\n")
            title = next((line.split(":", 1)[1].strip() for line in head.splitlines() if line.lower().startswith("title:")), "")
    if not text.strip():
        raise CorpusError(f"{path}: empty file")
    heading = re.search(r"^# (.+)$", text, re.MULTILINE)
    title = title or (heading[1].strip() if heading else path.stem.replace("-", " ").replace("_", " ").capitalize())
    return CorpusFile(source=path.stem, title=title, text=text.strip())


def chunk_text(text: str, title: str, max_chars: int = MAX_CHUNK_CHARS) -> list[Chunk]:
    """Sections (by `##`/`###` heading), each packed paragraph by paragraph up to max_chars."""
    chunks: list[Chunk] = []
    section, paragraphs = "", []

    def flush() -> None:
        heading = f"{title} - {section}" if section else title
        piece = ""
        for paragraph in paragraphs:
            for part in _split_long(paragraph, max_chars):
                if piece and len(piece) + len(part) + 2 > max_chars:
                    chunks.append(Chunk(heading, piece))
                    piece = ""
                piece = f"{piece}\n\n{part}" if piece else part
        if piece:
            chunks.append(Chunk(heading, piece))
        paragraphs.clear()

    for block in re.split(r"\n\s*\n", text):
        block = block.strip()
        if not block:
            continue
        first, _, rest = block.partition("\n")
        if first.startswith("# "):  # the title line
            block = rest.strip()
        elif re.match(r"#{2,6} ", first):
            flush()
            section = first.lstrip("#").strip()
            block = rest.strip()
        if block:
            paragraphs.append(block)
    flush()
    return chunks


def _split_long(paragraph: str, max_chars: int) -> list[str]:
    """A paragraph longer than max_chars, cut at sentence ends (or hard, as a last resort)."""
    if len(paragraph) <= max_chars:
        return [paragraph]
    pieces: list[str] = []
    for sentence in re.split(r"(?<=[.!?])\s+", paragraph):
        for start in range(0, len(sentence), max_chars):
            part = sentence[start : start + max_chars]
            if pieces and len(pieces[-1]) + len(part) + 1 <= max_chars:
                pieces[-1] = f"{pieces[-1]} {part}"
            else:
                pieces.append(part)
    return pieces


def shipped_corpus_dir() -> Path:
    return Path(str(resources.files("nodes") / "data" / "corpus"))


def collect(paths: list[Path]) -> list[CorpusFile]:
    """Files from paths and folders (folders: their markdown and text files), all validated
    before anything is written."""
    files = files_in(paths, SUFFIXES, CorpusError)
    if not files:
        raise CorpusError("no markdown or text files found in " + ", ".join(map(str, paths)))
    parsed = [parse_file(f) for f in files]
    seen: dict[str, Path] = {}
    for file, path in zip(parsed, files):
        if file.source in seen and seen[file.source] != path:
            raise CorpusError(f"{path} and {seen[file.source]} have the same name: rename one")
        seen[file.source] = path
    return parsed


# --- the database --------------------------------------------------------------------------


def ingest(pool: ConnectionPool, files: list[CorpusFile]) -> IngestReport:
    """Add new files, replace changed ones (same source name), skip content already present."""
    added = updated = unchanged = chunk_total = 0
    with pool.connection() as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_INGEST_LOCK_KEY,))
        for file in files:
            if conn.execute("SELECT 1 FROM corpus_documents WHERE content_sha = %s", (file.sha,)).fetchone():
                unchanged += 1
                continue
            chunks = chunk_text(file.text, file.title)
            row = conn.execute("SELECT id FROM corpus_documents WHERE source = %s", (file.source,)).fetchone()
            if row is None:
                row = conn.execute(
                    "INSERT INTO corpus_documents (source, title, content_sha, chunk_count) VALUES (%s, %s, %s, %s) RETURNING id",
                    (file.source, file.title, file.sha, len(chunks)),
                ).fetchone()
                added += 1
            else:
                conn.execute(
                    "UPDATE corpus_documents SET title = %s, content_sha = %s, chunk_count = %s, loaded_at = now() WHERE id = %s",
                    (file.title, file.sha, len(chunks), row["id"]),
                )
                conn.execute("DELETE FROM corpus_chunks WHERE document_id = %s", (row["id"],))
                updated += 1
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO corpus_chunks (document_id, ordinal, heading, body) VALUES (%s, %s, %s, %s)",
                    [(row["id"], n, c.heading, c.body) for n, c in enumerate(chunks)],
                )
            chunk_total += len(chunks)
    return IngestReport(added, updated, unchanged, chunk_total)


def ensure_corpus(pool: ConnectionPool) -> None:
    """Load the shipped sample corpus the first time research needs a corpus and has none."""
    with pool.connection() as conn:
        if conn.execute("SELECT EXISTS (SELECT 1 FROM corpus_documents) AS any").fetchone()["any"]:
            return
    ingest(pool, collect([shipped_corpus_dir()]))


def list_documents(pool: ConnectionPool) -> list[CorpusEntry]:
    with pool.connection() as conn:
        rows = conn.execute("SELECT source, title, chunk_count, loaded_at FROM corpus_documents ORDER BY source").fetchall()
    return [CorpusEntry(**r) for r in rows]


def search(pool: ConnectionPool, query: str, *, limit: int = 3) -> list[Passage]:
    """Best-matching chunks; terms are OR-ed so a whole question still finds partial matches."""
    sql = (
        "WITH q AS (SELECT replace(plainto_tsquery('english', %(q)s)::text, '&', '|')::tsquery AS q) "
        "SELECT d.source, d.title, c.heading, c.body, ts_rank(c.tsv, q.q) AS rank "
        "FROM corpus_chunks c JOIN corpus_documents d ON d.id = c.document_id, q "
        "WHERE c.tsv @@ q.q ORDER BY rank DESC, d.source, c.ordinal LIMIT %(limit)s"
    )
    with pool.connection() as conn:
        rows = conn.execute(sql, {"q": query, "limit": limit}).fetchall()
    return [Passage(r["source"], r["title"], r["heading"], r["body"], float(r["rank"])) for r in rows]
