"""Fixtures shared by the HTTP API, web page and notification tests.

Import the ones a module uses (`from tests.web_fixtures import ctx, server  # noqa: F401`):
`server` then scripts the session's fault-injecting model server so that every support thread
escalates and waits at `review` with the holding draft, the state all these tests decide from.
"""

from __future__ import annotations

import pytest

from tests.fault_server import ok
from tests.scripted import CANNOT_ANSWER
from web.app import WebContext

#: The signing key the in-process web app uses (40 bytes, as `SIGNOFF_SECRET_KEY` requires).
KEY = b"k" * 40


@pytest.fixture
def server(server):
    server.rule("Classify the customer message", ok('{"intent": "technical"}'))
    server.rule("technical support agent", ok(CANNOT_ANSWER))
    return server


@pytest.fixture
def ctx(pool):
    return WebContext(pool=pool, key=KEY, public_url="http://127.0.0.1:8321")
