"""Local receivers for notification tests: an HTTP endpoint that records what it is sent and
answers with scripted failures (500s, hangs past the client's timeout), and an SMTP server
(aiosmtpd) that keeps every message. Both listen on 127.0.0.1 only and stop on exit."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered (0: it hung up after a hang)
    at: float = field(default_factory=time.monotonic)  # when it arrived (backoff between attempts is measured on it)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpReceiver:
    """`with HttpReceiver() as r:` ... `r.url`, `r.script(500, 500, "hang")`, `r.received`."""

    hang_seconds: float = 3.0
    received: list[Received] = field(default_factory=list)
    _script: list[int | str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, *answers: int | str) -> None:
        """The next answers, in order (an int status, or "hang"); 200 once they run out."""
        with self._lock:
            self._script.extend(answers)

    def delivered(self) -> list[Received]:
        return [r for r in self.received if 200 <= r.status < 300]

    def __enter__(self) -> "HttpReceiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    answer = receiver._script.pop(0) if receiver._script else 200
                if answer == "hang":
                    receiver.received.append(Received(self.path, dict(self.headers), body, 0))
                    time.sleep(receiver.hang_seconds)
                    return
                receiver.received.append(Received(self.path, dict(self.headers), body, int(answer)))
                self.send_response(int(answer))
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if answer == 200 else b"injected failure")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class SmtpReceiver:
    """An aiosmtpd server on 127.0.0.1 keeping every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    def __enter__(self) -> "SmtpReceiver":
        import socket

        from aiosmtpd.controller import Controller

        receiver = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's naming
                receiver.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
                receiver.messages.append(message_from_bytes(envelope.content))
                return "250 OK"

        with socket.socket() as probe:  # a free port (aiosmtpd needs one named)
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def url(self, sender: str = "signoff@example.com", to: str = "lead@example.com") -> str:
        return f"smtp://127.0.0.1:{self.port}?from={sender}&to={to}"

    def __exit__(self, *exc: Any) -> None:
        self._controller.stop()


def receivers() -> Iterator[tuple[HttpReceiver, HttpReceiver, SmtpReceiver]]:
    """A webhook receiver, a Slack receiver and an SMTP server, for a fixture."""
    with HttpReceiver() as hook, HttpReceiver() as slack, SmtpReceiver() as smtp:
        yield hook, slack, smtp
