"""What the refund tests share: the demo order they refund (1042, 149.00 USD, owned by
OWNER), a model script that asks for that refund, the demo orders loaded, a reviewer who may
approve it (`lead`), and `flat`.

Import what a module uses (`from tests.refund_fixtures import OWNER, orders, server  # noqa: F401`).
"""

from __future__ import annotations

import pytest

from tests.fault_server import FaultServer, ok

REFUND_MESSAGE = "Please refund order 1042, it arrived broken"
OWNER = "maya.lopez@example.com"


@pytest.fixture
def server():
    """A billing message asking for order 1042's refund, the amount left to the order."""
    with FaultServer() as server:
        server.rule("Classify the customer message", ok('{"intent": "billing"}'))
        server.rule("Extract the refund request", ok('{"order_id": "1042", "amount": null}'))
        yield server


@pytest.fixture
def lead(reviewer):
    """`lead("approve", ...)`: the CLI run by "lead", a reviewer other than the requester (the
    OS login that started the thread), through a reviewer token in SIGNOFF_TOKEN."""
    return reviewer("lead")


@pytest.fixture
def orders(cli):
    assert cli("orders", "load").exit_code == 0


def flat(text: str) -> str:
    """Output with its line wrapping undone (rich wraps long lines to the terminal's width)."""
    return " ".join(text.split())
