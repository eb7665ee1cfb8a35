"""A LangGraph project, found the way LangGraph's own tools find it: `langgraph.json` in the
current folder (or the file `--config` / SIGNOFF_CONFIG names), its `env` file, and each of its
`graphs` by name, from `./path/file.py:attr` or `package.module:attr`.

`attr` may be a compiled graph, an uncompiled StateGraph, or a factory (a callable taking no
argument or a RunnableConfig) returning either, as LangGraph's server accepts. A graph that
fails to import is kept with its error: the other graphs, and every command, still work
(LangGraph's dev server refuses to start instead). Loading is lazy: a command imports only
the graphs it uses, once per process. `dependencies` are the project's to install.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from checkpoint.errors import InvalidInput, NotFound

CONFIG_NAME = "langgraph.json"
CONFIG_ENV = "SIGNOFF_CONFIG"


@dataclass
class LoadedGraph:
    """One graph of the project: compiled (without Signoff's checkpointer yet), or its error."""

    name: str
    source: str
    graph: Any = None
    error: str | None = None


@dataclass
class Project:
    """The graphs a `langgraph.json` lists; `error` when the file itself cannot be used."""

    path: Path | None
    sources: dict[str, str] = field(default_factory=dict)
    #: what a graph's entry declares for Signoff (`{"path": ..., "signoff": {...}}`): the state path
    #: of the amount under review (minor units) and its currency, the gate deadline in hours
    declared: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None
    _loaded: dict[str, LoadedGraph] = field(default_factory=dict)
    _mutex: threading.Lock = field(default_factory=threading.Lock)

    @property
    def root(self) -> Path:
        return self.path.parent if self.path else Path.cwd()

    def names(self) -> list[str]:
        return list(self.sources)

    def graph(self, name: str) -> LoadedGraph:
        """The graph named `name`, imported on first use; never raises for a broken graph."""
        with self._mutex:
            if name not in self._loaded:
                self._loaded[name] = load_graph(name, self.sources[name], self.root)
            return self._loaded[name]


def config_path(explicit: str | None = None) -> Path | None:
    """--config, else SIGNOFF_CONFIG, else ./langgraph.json if there is one; a named file that
    is missing is an error (NotFound), a missing ./langgraph.json just means no project."""
    named = explicit or os.environ.get(CONFIG_ENV) or ""
    if named.strip():
        path = Path(named).expanduser()
        if path.is_dir():
            path = path / CONFIG_NAME
        if not path.is_file():
            raise NotFound(f"no LangGraph configuration at {named}: pass the path of a langgraph.json with --config or {CONFIG_ENV}")
        return path.resolve()
    found = Path.cwd() / CONFIG_NAME
    return found.resolve() if found.is_file() else None


def read_project(path: Path | None) -> Project:
    """The project at `path` (None: no project), its env file loaded into the environment
    (values already set win, so a deploy's own settings are never overridden)."""
    if path is None:
        return Project(None)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return Project(path, error=f"{path.name} cannot be read: {exc}")
    if not isinstance(config, dict) or not isinstance(config.get("graphs"), dict):
        return Project(path, error=f"{path.name} has no \"graphs\" object mapping names to ./file.py:attr or package.module:attr")
    sources: dict[str, str] = {}
    declared: dict[str, dict[str, Any]] = {}
    for name, value in config["graphs"].items():
        source = value.get("path") if isinstance(value, dict) else value
        sources[str(name)] = source if isinstance(source, str) else repr(value)
        if isinstance(value, dict) and isinstance(value.get("signoff"), dict):
            declared[str(name)] = value["signoff"]
    project = Project(path, sources, declared)
    env = config.get("env")
    try:
        if isinstance(env, str) and env.strip():
            load_env_file(path.parent / env)
        elif isinstance(env, dict):
            for key, value in env.items():
                os.environ.setdefault(str(key), str(value))
    except OSError as exc:
        project.error = f"the env file {env} cannot be read: {exc.strerror or exc}"
    return project


def load_env_file(path: Path) -> None:
    """KEY=VALUE lines (dotenv's format: comments, `export`, quotes); set only if not set."""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        if line.startswith("export "):
            line = line[len("export "):]
        key, value = (part.strip() for part in line.split("=", 1))
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        if key:
            os.environ.setdefault(key, value)


def load_graph(name: str, source: str, root: Path) -> LoadedGraph:
    """Import and resolve one graph; any failure (an import error, a missing name, a factory
    that raises, even SystemExit) becomes its error line."""
    try:
        target, _, attr = source.rpartition(":")
        if not target or not attr:
            raise InvalidInput(f"{source!r} is not ./file.py:attr or package.module:attr")
        module = _import(target, root)
        if not hasattr(module, attr):
            raise InvalidInput(f"{target} has no {attr!r}")
        return LoadedGraph(name, source, graph=resolve(getattr(module, attr), attr))
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - one broken graph never stops the others
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return LoadedGraph(name, source, error=f"{exc.__class__.__name__}: {text}"[:300] if text else exc.__class__.__name__)


def _import(target: str, root: Path) -> Any:
    """A file path (relative to the configuration's folder) or a dotted module; the folder is
    put on sys.path, so the project's own modules import each other as in `langgraph dev`.
    Appended, not first: a project module named like one of Signoff's packages then fails to
    import (reported as that graph's error) instead of replacing Signoff's own."""
    if str(root) not in sys.path:
        sys.path.append(str(root))
    if target.endswith(".py") or "/" in target or target.startswith("."):
        path = (root / target).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"no file {target} (from {root})")
        module_name = "signoff_project__" + "__".join(path.relative_to(root).with_suffix("").parts).replace("-", "_") \
            if path.is_relative_to(root) else "signoff_project__" + path.stem
        if module_name in sys.modules:
            return sys.modules[module_name]
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {target}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(module_name, None)
            raise
        return module
    return importlib.import_module(target)


def resolve(value: Any, attr: str) -> Any:
    """A compiled graph from what `attr` names: compiled as is, a StateGraph compiled, a
    factory called (with a RunnableConfig if it takes an argument) once per process."""
    from langgraph.graph import StateGraph
    from langgraph.pregel import Pregel

    if isinstance(value, Pregel):
        return value
    if isinstance(value, StateGraph):
        return value.compile()
    if callable(value):
        made = _call_factory(value)
        if isinstance(made, StateGraph):
            return made.compile()
        if isinstance(made, Pregel):
            return made
        raise TypeError(f"{attr}() returned {type(made).__name__}, not a graph")
    raise TypeError(f"{attr} is {type(value).__name__}: not a graph, a StateGraph or a function that makes one")


def _call_factory(factory: Any) -> Any:
    from langchain_core.runnables import RunnableConfig

    try:
        takes = [p for p in inspect.signature(factory).parameters.values()
                 if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    except (TypeError, ValueError):
        takes = []
    made = factory(RunnableConfig(configurable={})) if takes else factory()
    if inspect.isawaitable(made):
        import asyncio

        made = asyncio.run(_awaited(made))
    if hasattr(made, "__enter__") and not hasattr(made, "invoke"):
        made = made.__enter__()  # a context-manager factory: held open for the process
    return made


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


_current: Project | None = None
_current_key: str | None = None
_lock = threading.Lock()


def current_project() -> Project:
    """The project this process serves (found once per configuration path)."""
    global _current, _current_key
    path = config_path()
    key = str(path)
    with _lock:
        if _current is None or _current_key != key:
            _current, _current_key = read_project(path), key
        return _current
