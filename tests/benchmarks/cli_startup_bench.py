"""How long `signoff` commands take, start to exit, as a person runs them (a script, not a test).

Run from the project root:  python tests/benchmarks/cli_startup_bench.py [--runs 7]

Sets up its own PostgreSQL (bench_env: embedded in a throwaway SIGNOFF_HOME, or a new database
on DATABASE_URL's server), migrates it and runs one real support thread to its gate (scripted
model server), so `show` and `audit` have a thread with checkpoints and audit rows. Then runs
each command as a fresh process (`python -m cli ...`, what the `signoff` script runs), once to
warm the file cache and `--runs` times measured, and prints the median, min and max wall time.
The database is running throughout (start-up is measured with a running database). The interpreter's
own floor (`python -c pass`) and the load average are printed so figures from a busy machine
can be read as such.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from bench_env import ROOT, cli_env, escalating_model_server, machine, median, postgres_server, scratch_database

THREAD = "bench-1"


def timed(argv: list[str], env: dict[str, str], runs: int) -> list[float]:
    """Wall seconds of each of `runs` runs, after one unmeasured run; fails loudly on an error."""
    times = []
    for i in range(runs + 1):
        begun = time.perf_counter()
        proc = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True)
        elapsed = time.perf_counter() - begun
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv[2:])} failed ({proc.returncode}): {proc.stderr.strip()[:500]}")
        if i:
            times.append(elapsed)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="also time the --json form of each read command")
    args = parser.parse_args()

    python = [sys.executable]
    commands: list[tuple[str, list[str], float | None]] = [
        ("python -c pass (interpreter floor)", ["-c", "pass"], None),
        ("signoff --help", ["-m", "cli", "--help"], 0.4),
        ("signoff config", ["-m", "cli", "config"], 0.4),
        ("signoff pending", ["-m", "cli", "pending"], 1.0),
        (f"signoff show {THREAD}", ["-m", "cli", "show", THREAD], 1.0),
        (f"signoff audit {THREAD}", ["-m", "cli", "audit", THREAD], 1.0),
        ("signoff db status", ["-m", "cli", "db", "status"], None),
        ("signoff model status", ["-m", "cli", "model", "status"], None),
    ]
    if args.json:
        commands += [(f"{label} --json", [*argv, "--json"], target) for label, argv, target in commands[2:]]

    print(f"machine: {machine()}")
    with postgres_server() as (server_url, home), scratch_database(server_url) as url:
        model = escalating_model_server()
        try:
            env = cli_env(url, home, model.base_url)
            started = subprocess.run([*python, "-m", "cli", "start", "support", "The app crashes", "--thread", THREAD],
                                     env=env, cwd=ROOT, capture_output=True, text=True)
            if started.returncode != 0:
                raise SystemExit(f"could not start the sample thread: {started.stderr.strip()[:500]}")
            print(f"{'command':<34} {'median':>8} {'min':>8} {'max':>8}  target")
            for label, argv, target in commands:
                times = timed([*python, *argv], env, args.runs)
                verdict = "" if target is None else f"< {target:.1f} s: {'met' if median(times) < target else 'NOT met'}"
                print(f"{label:<34} {median(times):>7.3f}s {min(times):>7.3f}s {max(times):>7.3f}s  {verdict}")
        finally:
            model.stop()
    print(f"after: {machine()}; {args.runs} measured runs per command, each a fresh process")


if __name__ == "__main__":
    main()
