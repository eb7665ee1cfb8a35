"""The documents a newcomer reads: a README short enough to read in ten minutes, links that
lead somewhere, and a repository that speaks only of the product (no record of who wrote what,
when, or in answer to which ticket)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.procs import ROOT

README_MAX_LINES = 300

#: How a document names how it was made, rather than what the product does. Each pattern is
#: written so that product words stay free: a user's HTTP "session", a database "session", a
#: support "issue", a "helper" function, a "blind" customer in a support message.
PROVENANCE = {
    "a working session by number": re.compile(r"\bsessions? +[0-9]+\b", re.IGNORECASE),
    "a helper by number": re.compile(r"\bhelper-[0-9]+\b", re.IGNORECASE),
    "an issue by number": re.compile(r"\bissues? +#?[0-9]+\b|\bissue_[0-9]+\b|\(issue [0-9]", re.IGNORECASE),
    "someone's notes": re.compile(r"\blead's +notes?\b|\bthe +lead's\b", re.IGNORECASE),
    "a data set named for how it was written": re.compile(r"\bblind[0-9]+\b|\bwritten +after +reading\b", re.IGNORECASE),
}

#: Files whose text is the product's: documents, code, schema, configuration, tests and the
#: data the graphs and benchmarks read.
TEXT_SUFFIXES = {".md", ".py", ".toml", ".sql", ".json", ".csv", ".html", ".css", ".txt", ".cfg", ".ini", ".yaml", ".yml"}


def tracked_files() -> list[Path]:
    """The repository's files as git tracks them (the working tree's, when git is not there)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        names = [n for n in out.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "__pycache__", ".pytest_cache"}
        names = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.relative_to(ROOT).parts)]
    return [ROOT / n for n in names if (ROOT / n).is_file()]


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def without_code(text: str) -> str:
    """The text outside fenced code blocks and inline code (where `#` is a shell comment, and
    a link's syntax is an example, not a link)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)
    return re.sub(r"`[^`\n]*`", "", text)


def anchor(heading: str) -> str:
    """The fragment GitHub gives a heading: lower case, punctuation dropped, spaces as '-'."""
    text = re.sub(r"`|\*\*?|_", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found = set()
    for line in without_code(path.read_text(encoding="utf-8")).splitlines():
        if m := re.match(r"#{1,6} +(.+?) *#*$", line):
            found.add(anchor(m.group(1)))
    return found


def relative_links(path: Path) -> list[str]:
    targets = re.findall(r"\]\(([^)\s]+)(?: \"[^\"]*\")?\)", without_code(path.read_text(encoding="utf-8")))
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def test_the_readme_is_at_most_300_lines():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move depth into docs/"


def test_every_relative_link_in_the_readme_and_docs_resolves_to_a_file_and_heading():
    broken = []
    for doc in documents():
        for link in relative_links(doc):
            target, _, fragment = link.partition("#")
            path = (doc.parent / target).resolve() if target else doc
            if not path.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {link} (no such file)")
            elif fragment and path.suffix == ".md" and fragment not in anchors(path):
                broken.append(f"{doc.relative_to(ROOT)}: {link} (no such heading)")
    assert broken == []


def test_every_document_in_docs_starts_with_what_its_reader_will_be_able_to_do():
    vague = []
    for doc in sorted((ROOT / "docs").glob("*.md")):
        paragraphs = [p for p in doc.read_text(encoding="utf-8").split("\n\n") if p.strip()]
        if not paragraphs[0].startswith("# ") or not re.match(r"After reading this you", paragraphs[1]):
            vague.append(str(doc.relative_to(ROOT)))
    assert vague == []


def test_no_file_in_the_repository_speaks_of_how_it_was_made():
    found = []
    for path in tracked_files():
        rel = path.relative_to(ROOT)
        if path.resolve() == Path(__file__).resolve():
            continue  # its patterns describe what is refused
        for label, pattern in PROVENANCE.items():
            if pattern.search(str(rel)):
                found.append(f"{rel}: file name: {label}")
        if path.suffix not in TEXT_SUFFIXES and path.name not in {"run"}:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            for label, pattern in PROVENANCE.items():
                if m := pattern.search(line):
                    found.append(f"{rel}:{number}: {label}: {m.group(0)!r}")
    assert found == []


def test_benchmark_data_sets_are_named_for_what_they_are():
    names = [p.name for p in (ROOT / "tests" / "benchmarks").glob("*.json")] + [p.name for p in (ROOT / "nodes" / "data").rglob("*") if p.is_file()]
    assert [n for n in names if re.search(r"blind|helper|session", n, re.IGNORECASE)] == []


def readme_commands() -> list[str]:
    """The one-line shell commands of the README's "The two commands" section, in order."""
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("## The two commands", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"^```sh\n(.*?)^```", section, flags=re.DOTALL | re.MULTILINE)]


def test_the_readme_test_command_is_the_one_ci_runs():
    main_job, tests = readme_commands()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    assert tests == ci


def test_the_readme_install_commands_show_pips_progress():
    assert [c for c in readme_commands() if re.search(r"pip install[^&]* -q\b", c)] == []
