"""Loading the support knowledge base: markdown articles with a small front-matter block."""

from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from psycopg_pool import ConnectionPool

from checkpoint.errors import InvalidInput, NotFound

CATEGORIES = ("billing", "technical", "general")


class ArticleFormatError(InvalidInput):
    """An article file is not in the expected format; the message names the file."""


class PathNotFound(NotFound):
    """A file or folder named on the command line does not exist."""


def read_text_file(path: Path, error: type[InvalidInput]) -> str:
    """A file's text, refused (as `error`, naming the file) unless it is UTF-8 text: PostgreSQL
    text cannot hold NUL, and a binary file is not an article."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise error(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise error(f"{path}: cannot read it ({exc.strerror or exc.__class__.__name__})") from None
    if "\x00" in text:
        raise error(f"{path}: contains NUL bytes, so it is not a text file: remove it or fix it")
    return text


def read_file_argument(path: Path, error: type[InvalidInput], missing: type[NotFound], *, expected: str, as_file: str) -> str:
    """The text of a file named on the command line: a missing path is `missing` (not found),
    a folder or a file that is not UTF-8 text is `error`, each naming what to pass instead."""
    if not path.exists():
        raise missing(f"{path}: no such file: pass {expected}")
    if path.is_dir():
        raise error(f"{path} is a folder: pass {as_file}")
    return read_text_file(path, error)


@dataclass(frozen=True)
class ArticleFile:
    slug: str
    title: str
    category: str
    body: str

    @property
    def sha(self) -> str:
        return hashlib.sha256(f"{self.title}\n{self.category}\n{self.body}".encode()).hexdigest()


def parse_article(path: Path) -> ArticleFile:
    """`---` front matter with `title:` and `category:`, then the markdown body."""
    text = read_text_file(path, ArticleFormatError)
    if not text.startswith("---"):
        raise ArticleFormatError(f"{path}: missing the '---' front matter with title and category")
    head, sep, body = text[3:].partition("\n---")
    if not sep:
        raise ArticleFormatError(f"{path}: front matter is not closed with '---'")
    meta = {}
    for line in head.strip().splitlines():
        key, _, value = line.partition(":")
        meta[key.strip().lower()] = value.strip()
    category = meta.get("category", "")
    if not meta.get("title") or category not in CATEGORIES:
        raise ArticleFormatError(f"{path}: needs 'title:' and 'category:' (one of {', '.join(CATEGORIES)})")
    return ArticleFile(slug=path.stem, title=meta["title"], category=category, body=body.strip())


def files_in(paths: list[Path], suffixes: tuple[str, ...], error: type[InvalidInput]) -> list[Path]:
    """The files named, plus those in the folders named whose suffix is one of `suffixes`
    (sorted). PathNotFound for a path that does not exist; `error` for a symlink in a folder
    that leads out of it (adding a folder never reads files from elsewhere; name such a file
    explicitly to add it)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            folder = path.resolve()
            for entry in sorted(path.iterdir()):
                if entry.suffix.lower() not in suffixes:
                    continue
                if entry.is_symlink() and not entry.resolve().is_relative_to(folder):
                    raise error(f"{entry} links to {entry.resolve()}, outside {path}: name that file itself if you mean to add it")
                if entry.is_file():
                    files.append(entry)
        elif path.is_file():
            files.append(path)
        else:
            raise PathNotFound(f"{path}: no such file or folder")
    return files


def shipped_articles_dir() -> Path:
    return Path(str(resources.files("nodes") / "data" / "kb"))


def collect(paths: list[Path]) -> list[ArticleFile]:
    """Articles from files and folders (folders: every *.md inside), validated before loading."""
    files = files_in(paths, (".md",), ArticleFormatError)
    if not files:
        raise ArticleFormatError("no markdown articles found in " + ", ".join(map(str, paths)))
    return [parse_article(f) for f in files]


def load_articles(pool: ConnectionPool, articles: list[ArticleFile]) -> tuple[int, int]:
    """Upsert by slug; an unchanged article is not rewritten. Returns (written, unchanged)."""
    written = 0
    with pool.connection() as conn, conn.transaction():
        for a in articles:
            row = conn.execute(
                "INSERT INTO kb_articles (slug, title, category, body, content_sha) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (slug) DO UPDATE SET title = EXCLUDED.title, category = EXCLUDED.category, "
                "body = EXCLUDED.body, content_sha = EXCLUDED.content_sha, loaded_at = now() "
                "WHERE kb_articles.content_sha <> EXCLUDED.content_sha RETURNING slug",
                (a.slug, a.title, a.category, a.body, a.sha),
            ).fetchone()
            written += row is not None
    return written, len(articles) - written


def ensure_loaded(pool: ConnectionPool) -> None:
    """Load the shipped articles the first time a support thread needs them.

    Asked once per pool: articles are never deleted, so once a pool has seen some it skips
    the round trip (two per support thread, which a worker running 500 of them felt)."""
    if pool in _loaded:
        return
    with pool.connection() as conn:
        loaded = conn.execute("SELECT EXISTS (SELECT 1 FROM kb_articles) AS any").fetchone()["any"]
    if not loaded:
        load_articles(pool, collect([shipped_articles_dir()]))
    _loaded.add(pool)


#: Pools whose database has articles (weak: a closed pool's entry goes with it).
_loaded: "weakref.WeakSet[ConnectionPool]" = weakref.WeakSet()
