"""What a command opens before it works: the settings in force, the migrated pool, the run
context (models, resilience policy) and the runner of a thread that must exist.

One place for it, so every command reads its settings at command time (never at import),
and builds the models before anything is written (a bad model configuration changes nothing).
Imports nothing heavy at module level: the CLI loads this at start-up.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from checkpoint.settings import Settings


def settings() -> Settings:
    return Settings.from_env()


def described(config: Settings) -> list[tuple[str, str, str]]:
    """`Settings.describe` with what a run would make of two settings: the hand-over playbook's
    row says how many topics and patterns it has, or why it cannot be used (what every run would
    refuse to start on); the reviewer's row says when no model makes the judgement calls."""
    from nodes.handover import PlaybookError, load_playbook
    from nodes.models import judges

    try:
        playbook = load_playbook(config.handover_playbook)
        checks = {"SIGNOFF_HANDOVER_PLAYBOOK": f"{len(playbook.topics)} topics, {playbook.pattern_count()} patterns"}
    except PlaybookError as exc:
        checks = {"SIGNOFF_HANDOVER_PLAYBOOK": f"CANNOT BE USED: {exc}"}
    if not judges(config.review_model or config.model):
        checks["SIGNOFF_REVIEW_MODEL"] = ("NO JUDGEMENT CALLS: this model cannot judge, so drafts go unscored and support answers "
                                          "from the best-ranked article; set local:1.5b or openai:<model-name>")
    from observability.config_rows import rows

    return [(name, value, f"{note}; {checks[name]}" if name in checks else note) for name, value, note in config.describe()] + rows()


def open_db(config: Settings, *, checkpoints: bool = True) -> Any:
    """The command's pool, migrated; `checkpoints=False` for a command that never reads
    checkpoints (skips importing LangGraph to check its migrations: see checkpoint/migrations.py)."""
    from checkpoint.database import connect

    return connect(config, checkpoints=checkpoints)


def make_context(config: Settings, pool: Any, *, eager: bool = True) -> Any:
    """The run context; `eager` builds the models now, so a bad model configuration fails
    before anything is written."""
    from nodes.context import SignoffContext
    from nodes.handover import load_playbook
    from nodes.models import LazyRegistry, lazy_review_registry, registry_from_settings
    from nodes.resilient import ResiliencePolicy

    models = LazyRegistry(lambda: registry_from_settings(config))
    if eager:
        models.resolve()
    # Checked now, built on the first judgement: a thread that makes none never starts its server.
    review_models = lazy_review_registry(config)
    return SignoffContext(models=models, pool=pool, policy=ResiliencePolicy(max_attempts=config.max_attempts),  # type: ignore[arg-type]
                          review_models=review_models, playbook=load_playbook(config.handover_playbook))  # type: ignore[arg-type]


@contextmanager
def existing_thread(thread_id: str, *, runnable: bool = True) -> Iterator[Any]:
    """The runner of a thread that must exist (its id already checked), on an open pool;
    `runnable` also builds the models (before anything is written, so a bad model
    configuration changes nothing)."""
    from runtime.thread_runner import ThreadRunner

    config = settings()
    with open_db(config) as pool:
        runner = ThreadRunner.for_thread(pool, thread_id)
        if runnable:
            runner.context = make_context(config, pool)
        yield runner
