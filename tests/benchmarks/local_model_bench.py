"""Benchmark a local model's serving path on this machine (a script, not a pytest test).

Run from the project root:  python tests/benchmarks/local_model_bench.py [--model 0.5b|1.5b] [--runs 3]

Measures, in a throwaway SIGNOFF_HOME so nothing shared is touched: cold assembly of the
GGUF from its chunk packages, the marker fast path, server cold start to healthy, reuse
of a running server, decode throughput for a ~128-token generation (completion_tokens /
wall time) and time to first token when streaming.  The story prompt asks for more than
128 tokens, so the cap is reached.  Prints the machine and a markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # runnable without installing signoff

from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from nodes.local_model import LOCAL_MODELS, ensure_model_file, ensure_server, stop_server

PROMPT = "Write a detailed story about a lighthouse keeper who finds a message in a bottle."


class Intent(BaseModel):
    intent: Literal["billing", "technical", "general"]


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU jiffies of the whole machine since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4], sum(fields)


def process_jiffies(pid: int) -> int:
    """utime + stime of ``pid`` in jiffies (fields 14 and 15 of /proc/PID/stat)."""
    after_name = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(after_name[11]) + int(after_name[12])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--model", choices=sorted(LOCAL_MODELS), default="0.5b")
    parser.add_argument("--no-thread", action="store_true", help="skip the CLI support-thread timings")
    args = parser.parse_args()
    model = LOCAL_MODELS[args.model]

    import llama_cpp

    print(f"machine: nproc={os.cpu_count()} cpu={cpu_model()!r} python={platform.python_version()} "
          f"llama-cpp-python={llama_cpp.__version__}")  # fmt: skip
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="signoff-bench-") as tmp:
        home = Path(tmp)
        try:
            assemble = timed(lambda: ensure_model_file(home, model))
            rows.append((f"model file assembly, cold ({model.parts} chunks → GGUF + sha256)", f"{assemble:.2f} s"))
            warm = timed(lambda: ensure_model_file(home, model))
            rows.append(("model file check, warm (marker fast path)", f"{warm * 1000:.2f} ms"))
            cold = timed(lambda: ensure_server(home, model))
            rows.append(("server cold start → healthy (model already assembled)", f"{cold:.2f} s"))
            reuse = timed(lambda: ensure_server(home, model))
            rows.append(("ensure_server reuse of a running server", f"{reuse * 1000:.1f} ms"))
            info = ensure_server(home, model)
            llm = ChatOpenAI(base_url=info.base_url, api_key="local", model=model.alias, max_retries=0,
                             temperature=0, max_tokens=args.max_tokens, stream_usage=True)  # fmt: skip
            llm.invoke("Hello")  # warm-up: first request pays one-off allocations
            # Other processes competing for the 2 cores skew every number below: measure them.
            busy0, total0 = machine_jiffies()
            ours0 = process_jiffies(info.pid) + process_jiffies(os.getpid())

            # Each run varies the prompt's start: llama_cpp reuses the KV cache of a shared prefix.
            rates, tokens = [], []
            for i in range(args.runs):
                start = time.perf_counter()
                msg = llm.invoke(f"({i}) {PROMPT}")
                wall = time.perf_counter() - start
                n = msg.usage_metadata["output_tokens"] if msg.usage_metadata else 0
                tokens.append(n)
                rates.append(n / wall)
            rows.append((f"generation tokens/s (~{args.max_tokens} tokens, median of {args.runs})",
                         f"{statistics.median(rates):.1f} tok/s (tokens: {tokens})"))  # fmt: skip

            long_prompt = "Summarise these notes.\n" + "The customer reports a login error after the update. " * 50
            for label, prompt in (("short prompt", PROMPT), ("~500-token prompt", long_prompt)):
                ttfts = []
                for i in range(args.runs):
                    start = time.perf_counter()
                    stream = llm.stream(f"({i}) {prompt}")
                    for chunk in stream:
                        if chunk.content:
                            ttfts.append(time.perf_counter() - start)
                            break
                    stream.close()  # disconnects, so the server stops generating for this request
                rows.append((f"time to first token, streaming, {label} (median of {args.runs})",
                             f"{statistics.median(ttfts) * 1000:.0f} ms"))  # fmt: skip

            structured = llm.bind(response_format={"type": "json_object", "schema": Intent.model_json_schema()})
            lat = []
            for i in range(args.runs):
                start = time.perf_counter()
                Intent.model_validate_json(str(structured.invoke(f"Ticket {i}: 'charged twice'. Classify.").content))
                lat.append(time.perf_counter() - start)
            rows.append((f"json_object+schema call, Intent (median of {args.runs})", f"{statistics.median(lat):.2f} s"))
            busy1, total1 = machine_jiffies()
            ours1 = process_jiffies(info.pid) + process_jiffies(os.getpid())
            others = max(0.0, (busy1 - busy0 - (ours1 - ours0)) / max(1, total1 - total0))
            status = dict(line.split(":", 1) for line in Path(f"/proc/{info.pid}/status").read_text().splitlines() if ":" in line)
            rows.append(("server memory, peak resident (VmHWM)", f"{int(status['VmHWM'].split()[0]) // 1024} MiB"))
        finally:
            stop_server(home)

    if not args.no_thread:
        rows.extend(support_thread_rows(args.model))
    print(f"other processes used {others:.0%} of all CPUs during the timed requests", end="")
    print(" -- WARNING: contended machine, numbers are pessimistic" if others > 0.1 else "")
    width = max(len(name) for name, _ in rows)
    print(f"\n| {'measure':<{width}} | result |\n|{'-' * (width + 2)}|--------|")
    for name, value in rows:
        print(f"| {name:<{width}} | {value} |")


def support_thread_rows(key: str) -> list[tuple[str, str]]:
    """The README's main job, end to end through the CLI: cold (fresh SIGNOFF_HOME: embedded
    PostgreSQL initdb, model assembly, server start) and warm (everything already running)."""
    import subprocess

    rows = []
    with tempfile.TemporaryDirectory(prefix="signoff-bench-thread-", dir="/tmp") as tmp:
        home = Path(tmp)
        env = {k: v for k, v in os.environ.items() if k not in ("SIGNOFF_MODEL", "SIGNOFF_FALLBACK_MODEL", "DATABASE_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL")}
        env["SIGNOFF_HOME"] = str(home)
        env["SIGNOFF_MODEL"] = f"local:{key}"
        command = [sys.executable, "-m", "cli", "start", "support", "I was charged twice this month"]
        root = Path(__file__).resolve().parents[2]
        try:
            for label in ("cold: fresh SIGNOFF_HOME", "warm: database and model running"):
                start = time.perf_counter()
                done = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True, timeout=900)
                elapsed = time.perf_counter() - start
                stopped = "gate" if "waiting at gate" in done.stdout else ("finished" if "finished" in done.stdout else f"exit {done.returncode}")
                rows.append((f"support thread to its stop via the CLI, {label}", f"{elapsed:.1f} s ({stopped})"))
        finally:
            stop_server(home)
            from checkpoint.embedded import stop_embedded

            stop_embedded(home)
    return rows


if __name__ == "__main__":
    main()
