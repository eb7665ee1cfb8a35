"""Smoke test on the real default local model (Qwen2.5-Coder 0.5B Instruct via llama.cpp):
structure, never wording.

This is the README's main job with nothing configured: no SIGNOFF_MODEL, no API key. The
model server is started on demand by the CLI, exactly as a user's first run starts it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from checkpoint.database import open_pool
from graphs.registry import REVISION, SUPPORT
from runtime.thread_runner import ThreadRunner
from nodes.local_model import DEFAULT_MODEL, stop_server
from tests.conftest import count_rows, expect
from tests.test_cli import thread_id_from

MODEL_ENV = ("SIGNOFF_MODEL", "SIGNOFF_FALLBACK_MODEL", "OPENAI_API_KEY", "OPENAI_BASE_URL")


@pytest.fixture(scope="module")
def model_home(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("local-model-home")
    yield home
    stop_server(home)


def signoff(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", *args], env=env, capture_output=True, text=True, timeout=900)


def test_support_thread_runs_end_to_end_on_the_local_model(model_home: Path, database_url: str):
    env = {k: v for k, v in os.environ.items() if k not in MODEL_ENV}
    env.update(SIGNOFF_HOME=str(model_home), DATABASE_URL=database_url)

    started = signoff(env, "start", "support", "I was charged twice this month")
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"model=local:{DEFAULT_MODEL.alias}" in started.stdout, "the default local model answered"
    thread_id = thread_id_from(started.stdout)

    pool = open_pool(database_url)
    try:
        snapshot = ThreadRunner(pool, SUPPORT).snapshot(thread_id)
        values = snapshot.values
        assert values["intent"] in ("billing", "technical", "general")
        assert values["sources"], "the knowledge base was searched"
        assert values.get("article") == values["sources"][0], "the 0.5B may not judge: the best-ranked article answers"
        assert [c["node"] for c in values["calls"]] == ["classify", "draft_reply"], "no judgement asked of the 0.5B"
        draft = values["calls"][1]
        assert draft["input_tokens"] > 50 and draft["output_tokens"] > 5, "the streamed draft's tokens are counted"
        assert values.get("draft"), "a reply was drafted for the reviewer"
        assert "review" in snapshot.next, "the thread stopped at its gate"
        assert "signoff approve" in started.stdout

        approved = signoff(env, "approve", thread_id, *expect(database_url, thread_id))
        assert approved.returncode == 0, approved.stdout + approved.stderr
        assert "finished" in approved.stdout
        assert count_rows(pool, "outbox", thread_id=thread_id) == 1
    finally:
        pool.close()


def test_a_revision_thread_on_the_local_model_goes_to_its_gate_unscored_and_says_why(model_home: Path, database_url: str):
    """The 0.5B cannot judge drafts (nodes/local_model.py `judges`): its draft reaches the person
    at the gate without a score, never with a made-up one, and the warning names the setting."""
    env = {k: v for k, v in os.environ.items() if k not in MODEL_ENV + ("SIGNOFF_REVIEW_MODEL",)}
    env.update(SIGNOFF_HOME=str(model_home), DATABASE_URL=database_url)

    started = signoff(env, "start", "revision", "Explain in two short paragraphs why backups matter.")
    assert started.returncode == 0, started.stdout + started.stderr
    assert "waiting at gate publish" in started.stdout
    assert "SIGNOFF_REVIEW_MODEL=local:1.5b" in started.stdout, "the person is told why there is no score"

    pool = open_pool(database_url)
    try:
        values = ThreadRunner(pool, REVISION).snapshot(thread_id_from(started.stdout)).values
    finally:
        pool.close()
    assert values["document"] and values["score"] is None
    assert [c["node"] for c in values["calls"]] == ["write"], "the local model was never asked for a score"
    assert values["gate_warning"].startswith(f"not scored: local:{DEFAULT_MODEL.alias} cannot tell a good draft from a poor one")
