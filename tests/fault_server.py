"""A fault-injecting OpenAI-compatible chat-completions server for tests (standard library only).

    with FaultServer() as server:
        server.script(status(429, retry_after=1), ok('{"x": 1}'))
        chat = ChatOpenAI(base_url=server.base_url, api_key="test", model="m", max_retries=0)

Each POST /v1/chat/completions consumes the next scripted behaviour; with none left, the first
`once(needle, ...)` rule whose needle is in the request's messages (used up), else the first
`rule(needle, ...)` that matches (kept), else `ok()`. Every request body is kept in `requests`.
Answers echo the request's model, and stream as server-sent events when the request asks for
`"stream": true`. `held(release)` keeps a request waiting until the test sets `release`, so a
test can act (kill, interrupt, restart the database) while a client is inside a model call.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: No hang outlives this, whatever the script says, so a test run cannot stall on one.
MAX_HANG = 10.0
#: Nor does a held request.
MAX_HOLD = 60.0


@dataclass(frozen=True)
class Behaviour:
    kind: str  # "ok" | "status" | "hang" | "drop" | "malformed"
    content: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    code: int = 200
    retry_after: float | str | None = None
    body: Any = None
    seconds: float = 0.0
    release: threading.Event | None = None
    then: "Behaviour | None" = None
    #: the completion's finish_reason ("length": cut off at the token limit)
    finish: str = "stop"


def ok(content: str = "ok", prompt_tokens: int = 7, completion_tokens: int = 3, delay: float = 0.0, finish: str = "stop") -> Behaviour:
    """A normal completion with this content and usage, sent after `delay` seconds (at most MAX_HANG);
    `finish="length"` says it was cut off at the token limit."""
    return Behaviour("ok", content=content, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, seconds=min(delay, MAX_HANG), finish=finish)


def status(code: int, retry_after: float | str | None = None, body: Any = None) -> Behaviour:
    """An HTTP error with OpenAI's error JSON (or `body` as given), optionally a Retry-After."""
    return Behaviour("status", code=code, retry_after=retry_after, body=body)


def hang(seconds: float = 5.0) -> Behaviour:
    """Read the request, say nothing for `seconds` (at most MAX_HANG, less on shutdown), close."""
    return Behaviour("hang", seconds=min(seconds, MAX_HANG))


def held(release: threading.Event, then: Behaviour | None = None) -> Behaviour:
    """Keep the request waiting until `release` is set (at most MAX_HOLD), then answer `then`
    (default: as the `rule`s say, else `ok()`); on server shutdown the connection is closed."""
    return Behaviour("held", release=release, then=then)


def drop() -> Behaviour:
    """Read the request, then close the connection without a byte of response."""
    return Behaviour("drop")


def malformed() -> Behaviour:
    """HTTP 200, application/json, and a body that is not JSON."""
    return Behaviour("malformed")


_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


def _error_body(code: int) -> dict[str, Any]:
    kind, err_code = _ERROR_TYPES.get(code, ("server_error", None))
    return {"error": {"message": f"injected HTTP {code}", "type": kind, "param": None, "code": err_code}}


class FaultServer:
    """OpenAI-compatible server on 127.0.0.1, an ephemeral port, in a daemon thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[Behaviour] = deque()
        self._once: list[tuple[str, Behaviour]] = []
        self._rules: list[tuple[str, Behaviour]] = []
        self._stopping = threading.Event()
        self.requests: list[dict[str, Any]] = []
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.fault = self
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "FaultServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # releases hangs at once
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()  # block_on_close is off: never waits on handler threads

    def __enter__(self) -> "FaultServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting ---------------------------------------------------------------------------

    def script(self, *behaviours: Behaviour) -> "FaultServer":
        with self._lock:
            self._queue.extend(behaviours)
        return self

    def rule(self, needle: str, behaviour: Behaviour) -> "FaultServer":
        """Answer every request whose messages contain `needle` with `behaviour`."""
        with self._lock:
            self._rules.append((needle, behaviour))
        return self

    def once(self, needle: str, behaviour: Behaviour) -> "FaultServer":
        """Answer the next request whose messages contain `needle` with `behaviour` (before rules)."""
        with self._lock:
            self._once.append((needle, behaviour))
        return self

    def matching(self, needle: str) -> int:
        """How many requests so far had `needle` in their messages."""
        with self._lock:
            return sum(1 for body in self.requests if needle in prompt_text(body))

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.requests)

    @property
    def pending(self) -> int:
        """Scripted behaviours not consumed yet."""
        with self._lock:
            return len(self._queue)

    def _next(self, body: dict[str, Any]) -> Behaviour:
        text = prompt_text(body)
        with self._lock:
            self.requests.append(body)
            if self._queue:
                return self._queue.popleft()
            for index, (needle, behaviour) in enumerate(self._once):
                if needle in text:
                    del self._once[index]
                    return behaviour
            return self._by_rule(text)

    def _by_rule(self, text: str) -> Behaviour:
        for needle, behaviour in self._rules:
            if needle in text:
                return behaviour
        return ok()


def prompt_text(body: dict[str, Any]) -> str:
    """The request's messages as one string, for matching rules."""
    return "\n".join(str(m.get("content", "")) for m in body.get("messages", []) if isinstance(m, dict))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    fault: FaultServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (timed out, closed a stream early) is part of the game."""
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # -- routes ------------------------------------------------------------------------------

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": "fault-model", "object": "model", "created": 0, "owned_by": "tests"}]})
        else:
            self._json(404, _error_body(404))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._json(404, _error_body(404))
            return
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._json(400, _error_body(400))
            return
        fault = self.server.fault
        behaviour = fault._next(body)
        model = body.get("model", "unknown")
        if behaviour.kind == "held":
            assert behaviour.release is not None
            deadline = time.monotonic() + MAX_HOLD
            while not behaviour.release.wait(0.02):
                if fault._stopping.is_set() or time.monotonic() > deadline:
                    self._abort()
                    return
            with fault._lock:
                behaviour = behaviour.then or fault._by_rule(prompt_text(body))

        if behaviour.kind == "ok":
            if behaviour.seconds:
                fault._stopping.wait(behaviour.seconds)
            if body.get("stream"):
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                self._sse(model, behaviour, include_usage)
            else:
                self._json(200, _completion(model, behaviour))
        elif behaviour.kind == "status":
            headers = {}
            if behaviour.retry_after is not None:
                value = behaviour.retry_after
                headers["Retry-After"] = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
            payload = behaviour.body if behaviour.body is not None else _error_body(behaviour.code)
            self._json(behaviour.code, payload, headers)
        elif behaviour.kind == "hang":
            fault._stopping.wait(behaviour.seconds)
            self._abort()
        elif behaviour.kind == "drop":
            self._abort()
        elif behaviour.kind == "malformed":
            self._raw(200, b'{"id": "chatcmpl-broken", "choices": [', "application/json")
        else:  # pragma: no cover - a typo in a test
            raise ValueError(f"unknown behaviour {behaviour.kind!r}")

    # -- writing -----------------------------------------------------------------------------

    def _raw(self, code: int, data: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _json(self, code: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._raw(code, json.dumps(payload).encode(), "application/json", headers)

    def _sse(self, model: str, behaviour: Behaviour, include_usage: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for chunk in _stream_chunks(model, behaviour, include_usage):
            self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())
        self._chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _abort(self) -> None:
        """Close the connection without a response (RST, so the client sees it at once)."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _usage(behaviour: Behaviour) -> dict[str, int]:
    return {
        "prompt_tokens": behaviour.prompt_tokens,
        "completion_tokens": behaviour.completion_tokens,
        "total_tokens": behaviour.prompt_tokens + behaviour.completion_tokens,
    }


def _completion(model: str, behaviour: Behaviour) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": behaviour.content}, "logprobs": None, "finish_reason": behaviour.finish}
        ],
        "usage": _usage(behaviour),
    }


def _stream_chunks(model: str, behaviour: Behaviour, include_usage: bool) -> list[dict[str, Any]]:
    ident = f"chatcmpl-{uuid.uuid4().hex[:12]}"
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            data["usage"] = None
        return data

    words = behaviour.content.split(" ")
    pieces = [w if i == len(words) - 1 else w + " " for i, w in enumerate(words)]
    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"content": piece}) for piece in pieces if piece]
    chunks.append(chunk({}, behaviour.finish))
    if include_usage:
        chunks.append({"id": ident, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [], "usage": _usage(behaviour)})
    return chunks
