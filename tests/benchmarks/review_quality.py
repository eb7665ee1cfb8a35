"""Reviewer quality benchmark for the writing graphs (revision, research): a script, not a test.

Run from the project root:

    .venv/bin/python tests/benchmarks/review_quality.py [--model local|local:1.5b|openai:NAME] [--review-model SPEC] [--pairs FILE]

`--review-model` (default: SIGNOFF_REVIEW_MODEL, if set) measures a separate reviewer, as the
graphs use it: the reviews go to that model only (the writer's model is never started).

The writing loop only works if its reviewer can tell a good draft from a bad one: the score
decides whether a draft is revised, and which draft reaches the `publish` gate.  For each pair
below (one brief, a good draft, a deliberately poor one: off-topic, padded, wrong, a stub,
ignoring the brief) it calls the real `review` prompt and schema (nodes/writing.py) through
the same resilient model path the graphs use, applies the same text checks the graphs apply
(nodes/draft_checks.py: a draft cut off mid-sentence is capped below the threshold), and
reports both scores, which a text check lowered, and whether the poor draft scored lower.
`--pairs tests/benchmarks/review_pairs_heldout_1.json` (or `_2.json`, `_3.json`: held-out review
pairs, sets 1 to 3) runs 10 pairs written by someone who had seen neither the reviewer's prompt
nor these pairs.  A model the graphs
never ask for scores (the local 0.5B, ModelHandle.judges) is still measured, and the report
says so.  For local models the server runs in a throwaway SIGNOFF_HOME and is stopped at the
end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # runnable without installing signoff

PAIRS: list[tuple[str, str, str, str]] = [
    (
        "Explain to a new engineer why every step of a workflow is checkpointed.",
        "# Why we checkpoint every step\n\nA workflow can stop at any moment: a deploy, a crash, a lost "
        "database connection. Saving the state after each step means a restarted run continues from the "
        "last finished step instead of starting over.\n\nIt also makes retries safe: a step that already "
        "wrote its result is not run twice, so a customer never gets two emails.",
        "# Our office\n\nThe office has a kitchen on the second floor. Lunch is served at noon and the "
        "coffee machine was replaced last spring. Parking is available behind the building.",
        "off-topic",
    ),
    (
        "Write a short note for customers on how to reset their password.",
        "# Resetting your password\n\nOn the login screen, click **Forgot password?** and enter the email "
        "address of your account. Open the email we send you and follow the link within one hour.\n\n"
        "Choose a new password of at least 10 characters. You will be signed out on your other devices.",
        "# Password\n\nPasswords are important. Passwords are very important. It is important to have a "
        "password, and passwords should be important to everyone who has a password. Passwords matter.",
        "padded and repetitive",
    ),
    (
        "Summarise what an idempotency key is, for a backend developer.",
        "# Idempotency keys\n\nAn idempotency key is a unique value a client sends with a request that "
        "has side effects, such as a payment. The server stores the key with the result of the first "
        "request.\n\nIf the same key arrives again, after a timeout or a retry, the server returns the "
        "stored result instead of charging twice.",
        "# Idempotency keys\n\nAn idempotency key is the password of the database administrator. It is "
        "changed every day so that each request is processed several times, which makes payments faster.",
        "factually wrong",
    ),
    (
        "Describe three practices that make approval gates in a workflow safe to use.",
        "# Safe approval gates\n\n1. **Record every decision** with who made it and when, so the audit "
        "trail shows why work went ahead.\n2. **Bind an approval to what was shown**, for example with a "
        "digest of the draft, so nobody approves content that changed after they read it.\n3. **Give "
        "every gate a deadline and a default action**, so work never waits forever.",
        "# Gates\n\nTODO.",  # the deliberately poor draft of this pair: an unfinished stub
        "a stub",
    ),
    (
        "Write a brief, friendly welcome message for new users of a note-taking app.",
        "# Welcome to your notes\n\nWe're glad you're here! Create your first note with the **+** button, "
        "and it syncs to your other devices within seconds.\n\nNeed a hand? Open **Help** at any time, "
        "our team answers within one business day.",
        "# Quarterly revenue report\n\nRevenue grew 4% in the third quarter, driven by enterprise "
        "contracts. Operating costs were flat. The board approved the budget for next year.",
        "ignores the brief",
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="local", help="as SIGNOFF_MODEL: local, local:1.5b, openai:NAME")
    parser.add_argument("--pairs", type=Path, help="a JSON list of {brief, good, poor, flaw} (default: the 5 pairs in this file)")
    parser.add_argument("--review-model", default=os.environ.get("SIGNOFF_REVIEW_MODEL"),
                        help="as SIGNOFF_REVIEW_MODEL (default: that variable; unset: --model reviews)")
    args = parser.parse_args()

    from checkpoint.settings import Settings
    from nodes.draft_checks import capped
    from nodes.local_model import stop_server
    from nodes.models import has_review_model, registry_from_settings, review_registry_from_settings
    from nodes.resilient import ResiliencePolicy, call_model
    from nodes.writing import Review, reviewer_prompt

    pairs = PAIRS if args.pairs is None else [(p["brief"], p["good"], p["poor"], p["flaw"]) for p in json.loads(args.pairs.read_text())]
    rows, lower, seconds = [], 0, []
    with tempfile.TemporaryDirectory(prefix="sgr-", dir="/tmp") as tmp:
        env = {k: v for k, v in os.environ.items() if k != "SIGNOFF_FALLBACK_MODEL"}
        env = {**env, "SIGNOFF_HOME": tmp, "SIGNOFF_MODEL": args.model, "SIGNOFF_REVIEW_MODEL": args.review_model or ""}
        settings = Settings.from_env(env)
        try:
            # The registry the graphs' review node calls (SignoffContext.reviewer).
            models = review_registry_from_settings(settings) if has_review_model(settings) else registry_from_settings(settings)
            policy = ResiliencePolicy(max_attempts=settings.max_attempts)
            for brief, good, poor, flaw in pairs:
                scores, model_scores = [], []
                for draft in (good, poor):
                    start = time.perf_counter()
                    result = call_model("review", reviewer_prompt({"brief": brief, "draft": draft}), models, policy, schema=Review)
                    seconds.append(time.perf_counter() - start)
                    review = result.parsed
                    # the score the graphs use: the model's, capped by the text checks (nodes/draft_checks.py)
                    scores.append(capped(review.score, review.feedback, draft)[0] if isinstance(review, Review) else None)
                    model_scores.append(review.score if isinstance(review, Review) else None)
                ok = None not in scores and scores[1] < scores[0]  # type: ignore[operator]
                lower += ok
                rows.append((flaw, *scores, ok, model_scores != scores))
        finally:
            stop_server(Path(tmp))

    if not models.primary.judges:
        print(f"note: the writing graphs never ask {models.primary.name} for scores (ModelHandle.judges); measured for the record")
    print(f"reviewer model: {models.primary.name}; {len(pairs)} pairs ({args.pairs or 'built in'}); median {sorted(seconds)[len(seconds) // 2]:.1f} s per review call\n")
    print("| poor draft is | good score | poor score | poor lower |\n|---|---|---|---|")
    for flaw, good_score, poor_score, ok, checked in rows:
        fmt = lambda s: "failed" if s is None else f"{s:.2f}"  # noqa: E731
        print(f"| {flaw} | {fmt(good_score)} | {fmt(poor_score)}{' (text check)' if checked else ''} | {'yes' if ok else 'NO'} |")
    print(f"\nthe poor draft scored lower in {lower}/{len(pairs)} pairs")


if __name__ == "__main__":
    main()
