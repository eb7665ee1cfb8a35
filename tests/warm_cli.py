"""A `signoff` process started ahead of time (tests/procs.py, WarmCli).

It imports what a run imports, prints "ready", then reads one JSON line from stdin:
{"args": [...], "env": {...}}; it takes that environment and runs the CLI with those
arguments, exactly as `python -m cli ARGS` would (Settings are read from the environment at
command time, never at import). Tests that kill the CLI at many points start these one test
ahead, so a kill point costs the run, not the two seconds of interpreter and imports.
"""

from __future__ import annotations

import importlib
import json
import os
import sys

import cli

# What a run imports lazily (models, HTTP client, graphs); a name that moved is skipped.
for name in (
    "runtime.thread_runner", "graphs.registry", "console.progress", "checkpoint.migrations", "checkpoint.database",
    "langgraph.checkpoint.postgres", "langchain_openai", "langchain_openai.chat_models.base", "langchain_core.tools",
    "openai.resources.chat", "openai.pagination", "tiktoken", "truststore", "jiter", "yaml",
):
    try:
        importlib.import_module(name)
    except Exception:  # pragma: no cover - optional warm-up
        pass

sys.stdout.write("ready\n")
sys.stdout.flush()
line = sys.stdin.readline()
if not line.strip():
    sys.exit(0)
spec = json.loads(line)
os.environ.clear()
os.environ.update(spec["env"])
sys.argv = ["signoff", *spec["args"]]
cli.main()
