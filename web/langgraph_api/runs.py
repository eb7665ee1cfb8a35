"""Runs: what a client asks of a thread, carried by Signoff's job queue. A run with input
starts (or continues) the thread in a worker; a run whose command resumes an interrupt
records the decision (deciding.py) and the worker runs on from it. A run's status is read from
its job and where the thread stands (GET never writes); the serve process's tracker
(tracker.py) records how each run ended, queues its webhook and starts the runs queued
behind it (multitask_strategy "enqueue")."""

from __future__ import annotations

import threading
import uuid
from contextlib import contextmanager
from typing import Any, Iterator

from psycopg.types.json import Jsonb

from checkpoint import jobs, threads
from checkpoint.audit import record_event, record_event_on
from checkpoint.errors import InvalidInput
from web.decide import HttpError, valid_thread_id
from web.langgraph_api.http import field
from web.langgraph_api.webhooks import checked_webhook, queue_on, run_body

FINAL = ("success", "error", "timeout", "interrupted")
STRATEGIES = ("reject", "enqueue", "interrupt", "rollback")


def options_of(body: dict[str, Any]) -> dict[str, Any]:
    """The run's request, checked: what is stored with it and used to start it."""
    from web.langgraph_api.commanding import command_parts

    command = field(body, "command", dict)
    command_parts(command)  # its shape; who may send it is checked where it is queued (launch)
    if command and body.get("input") is not None:
        raise HttpError(422, "give a run an input or a command, not both")
    for key in ("interrupt_before", "interrupt_after"):
        value = body.get(key)
        if value is not None and value != "*" and not (isinstance(value, list) and all(isinstance(n, str) for n in value)):
            raise HttpError(422, f"{key} must be \"*\" or a list of node names")
    strategy = field(body, "multitask_strategy", str, "reject")
    if strategy not in STRATEGIES:
        raise HttpError(422, f"multitask_strategy must be one of {', '.join(STRATEGIES)}")
    webhook = checked_webhook(field(body, "webhook", str))
    stream_mode = body.get("stream_mode") or ["values"]
    stream_mode = [stream_mode] if isinstance(stream_mode, str) else stream_mode
    if not isinstance(stream_mode, list) or not all(isinstance(m, str) for m in stream_mode):
        raise HttpError(422, "stream_mode must be a mode or a list of modes")
    if field(body, "on_completion", str) not in (None, "delete", "keep"):
        raise HttpError(422, "on_completion must be delete or keep")
    try:
        from runtime.commanded import refuse_command_key
        from runtime.starting import run_config_options

        run_config_options(field(body, "config", dict))
        refuse_command_key(field(body, "input", dict), "input")
    except InvalidInput as exc:
        raise HttpError(422, str(exc)) from None
    return {"input": field(body, "input", dict), "command": command, "config": field(body, "config", dict),
            "context": field(body, "context", dict), "interrupt_before": body.get("interrupt_before"),
            "interrupt_after": body.get("interrupt_after"), "stream_mode": stream_mode,
            "stream_subgraphs": bool(body.get("stream_subgraphs")), "on_completion": body.get("on_completion"),
            "metadata": field(body, "metadata", dict) or {}, "multitask_strategy": strategy, "webhook": webhook,
            "assistant_id": field(body, "assistant_id", str)}


def create_run(pool: Any, actor: str, thread_id: str | None, body: dict[str, Any], *, token_id: int | None = None) -> dict[str, Any]:
    """Store the run and start it, or queue it behind the thread's run; the run as the API
    shows it. Nothing is stored when the request is refused."""
    from web.langgraph_api.assistants import entry_for

    opts = options_of(body)
    if not opts["assistant_id"]:
        raise HttpError(422, "assistant_id is required: an assistant's id or its graph's name")
    entry = entry_for(opts["assistant_id"])
    given = thread_id is not None
    if thread_id is None:
        thread_id = str(uuid.uuid4())
        if opts["on_completion"] is None:
            opts["on_completion"] = "delete"
    valid_thread_id(thread_id)
    if_not_exists = field(body, "if_not_exists", str, "reject")
    run_id = str(uuid.uuid4())
    with threads_lock(pool, thread_id):
        row, api_known, job_busy, mark, busy = standing(pool, thread_id)
        if row is None and not api_known and given and if_not_exists != "create":
            raise HttpError(404, f"no thread {thread_id!r}: create it first, or pass if_not_exists=\"create\"")
        if row is not None and row.graph != entry.name:
            raise HttpError(409, f"thread {thread_id} runs graph {row.graph}, not {entry.name}")
        thread_busy = bool(busy) or (row is not None and (row.status in ("queued", "running") or job_busy))
        if thread_busy:
            strategy = opts["multitask_strategy"]
            if strategy == "reject":
                raise HttpError(409, f"thread {thread_id} is busy with a run: wait for it, or pass multitask_strategy enqueue, "
                                     "interrupt or rollback")
            if strategy in ("interrupt", "rollback"):
                for other in busy:
                    cancel(pool, other, actor, rollback=strategy == "rollback", wait=False)
                if threads_running(pool, thread_id):
                    raise HttpError(409, f"thread {thread_id} is running a step in a worker: it cannot be interrupted mid-step; "
                                         "pass multitask_strategy enqueue to run after it")
                mark = last_event(pool, thread_id)  # the new run's stream starts after the stopped run's last event
            else:
                return insert_run(pool, run_id, thread_id, entry.name, opts, actor, job_id=None, checkpoint=None, token_id=token_id)
        job, checkpoint, done = launch(pool, thread_id, entry, opts, actor, token_id=token_id)
        return insert_run(pool, run_id, thread_id, entry.name, opts, actor, job_id=job, checkpoint=checkpoint, token_id=token_id,
                          status="success" if done else "pending", from_event=mark)


#: a job waits or runs for the thread, other than one whose run has stopped (written its stop)
#: and is closing
_JOB_BUSY = ("EXISTS (SELECT 1 FROM jobs j WHERE j.thread_id = %(t)s AND j.status IN ('todo', 'doing') AND NOT (j.status = 'doing' "
             "AND EXISTS (SELECT 1 FROM progress_events e WHERE e.thread_id = j.thread_id AND e.event->>'event' = 'stop' "
             "AND e.event->>'job' = j.id::text)))")


def standing(pool: Any, thread_id: str) -> tuple[threads.ThreadRow | None, bool, bool, int, list[dict[str, Any]]]:
    """Where the thread stands for a new run, read on one connection: (its row, whether the
    API made it, whether a job waits or runs for it, its last progress event, its open runs).
    The event is read before the run's job exists: a worker may start on it at once, and
    what the run streams and waits for comes after it."""
    with pool.connection() as conn:
        found = conn.execute(
            f"SELECT t.*, EXISTS (SELECT 1 FROM api_threads WHERE thread_id = %(t)s) AS api_known, {_JOB_BUSY} AS job_busy, "
            "(SELECT coalesce(max(id), 0) FROM progress_events WHERE thread_id = %(t)s) AS last_event, "
            "EXISTS (SELECT 1 FROM api_runs WHERE thread_id = %(t)s AND status IN ('pending', 'running')) AS runs_open "
            "FROM (SELECT %(t)s::text AS key) k LEFT JOIN threads t ON t.thread_id = k.key", {"t": thread_id}).fetchone()
        busy = _open_runs_on(conn, thread_id) if found["runs_open"] else []
    row = threads.ThreadRow.from_db(found) if found["thread_id"] is not None else None
    return row, bool(found["api_known"]), bool(found["job_busy"]), int(found["last_event"]), busy


_thread_locks: dict[str, threading.Lock] = {}
_locks_mutex = threading.Lock()


@contextmanager
def threads_lock(pool: Any, thread_id: str) -> Iterator[None]:
    """Serialise run creation on one thread in this process, so two clients creating runs at
    once see each other's. A lock held in the process, not on a pooled connection, taken while
    holding none: the work under it takes one connection at a time and gives it back before
    the next (a decision's extra statements run on its row lock's own connection), so
    however many requests wait here or for the pool, each needs only one to go on."""
    with _locks_mutex:
        lock = _thread_locks.setdefault(thread_id, threading.Lock())
    with lock:
        yield
    with _locks_mutex:
        if not lock.locked():
            _thread_locks.pop(thread_id, None)


def job_running(pool: Any, thread_id: str) -> bool:
    """A job waits or runs for the thread, other than one whose run has stopped (written its
    stop) and is closing."""
    with pool.connection() as conn:
        row = conn.execute(f"SELECT {_JOB_BUSY} AS busy", {"t": thread_id}).fetchone()
    return bool(row["busy"])


def threads_running(pool: Any, thread_id: str) -> bool:
    job = jobs.active_job(pool, thread_id)
    return job is not None and job["status"] == "doing"


def launch(pool: Any, thread_id: str, entry: Any, opts: dict[str, Any], actor: str, *,
           token_id: int | None = None) -> tuple[int | None, str | None, bool]:
    """Start what the run asks on Signoff's queue: (its job, the checkpoint it starts after,
    True when it is already done: an approval chain's stage recorded, waiting for the next)."""
    from runtime.starting import check_input, run_config_options, run_options, summary_of
    from runtime.versions import version_of
    from web.langgraph_api.commanding import command_parts, queue_command
    from web.langgraph_api.deciding import job_for, resume_with

    row = threads.get(pool, thread_id)
    command = opts["command"] or {}
    before, after = opts["interrupt_before"], opts["interrupt_after"]
    options = {**run_options(entry.name, entry.graph, opts["context"], _names(before), _names(after)),
               **run_config_options(opts["config"])}
    if command_parts(command) is None and "resume" in command:
        if row is None:
            raise HttpError(409, f"thread {thread_id} has not run yet: there is nothing to resume")
        # the row just read, and the checkpoint the decision is bound to: neither read again
        job, waiting, checkpoint = resume_with(pool, thread_id, command["resume"], actor, token_id=token_id, row=row)
        return job, checkpoint, waiting
    checkpoint = current_checkpoint(pool, thread_id) if row is not None else None
    if command_parts(command) is not None:
        queue_command(pool, thread_id, row, entry, command, {**_without_config(row.run_options if row else None), **options},
                      actor, token_id)
        return job_for(pool, thread_id, "start"), checkpoint, False
    graph_input = opts["input"]
    if row is None:
        graph_input = graph_input or {}
        try:
            check_input(entry.name, entry.graph, graph_input)
        except Exception as exc:  # InvalidInput: one line
            raise HttpError(422, str(exc).replace("--input", "input")) from None
        hours = entry.spec.deadline_hours if entry.spec is not None else 24.0
        job = jobs.submit(pool, thread_id, entry.name, summary_of(graph_input), graph_input=graph_input, deadline_hours=hours,
                          actor=actor, graph_version=version_of(entry), run_options=options)
        return job, None, False
    if row.status == "waiting":
        from runtime.thread_runner import ThreadRunner

        runner = ThreadRunner.for_row(pool, row)
        _, open_, _ = runner.waiting_on(thread_id)
        if graph_input is None and all(p.kind in ("before", "after") for p in open_):
            job, waiting, _ = resume_with(pool, thread_id, None, actor, token_id=token_id, row=row)  # running on past an interrupt point approves it
            return job, checkpoint, waiting
        raise HttpError(409, f"thread {thread_id} waits at {open_[0].node} for a decision: resume it with command.resume "
                             f"(interrupt {open_[0].id})")
    if graph_input is None and row.status in ("failed", "interrupted"):
        return job_for(pool, thread_id, "recover"), checkpoint, False
    if graph_input is None:
        raise HttpError(422, f"thread {thread_id} has finished: give the run an input to continue it")
    with pool.connection() as conn, conn.transaction():  # the next run of a thread: a worker runs it from this input
        conn.execute("UPDATE threads SET status = 'queued', input = %s, run_options = %s, updated_at = now() WHERE thread_id = %s",
                     (Jsonb(graph_input), Jsonb({**_without_config(row.run_options), **options}), thread_id))
        record_event_on(conn, thread_id, actor, "run_requested", {"graph": entry.name})  # on the same connection: one at a time
    return job_for(pool, thread_id, "start"), checkpoint, False


def _without_config(run_options: dict[str, Any] | None) -> dict[str, Any]:
    """The thread's run options but the last run's config: each run gives its own."""
    return {k: v for k, v in (run_options or {}).items() if k not in ("configurable", "tags", "recursion_limit")}


def last_event(pool: Any, thread_id: str) -> int:
    from checkpoint.events import last_id

    return last_id(pool, thread_id)


def _names(points: Any) -> list[str]:
    return ["*"] if points == "*" else list(points or [])


def current_checkpoint(pool: Any, thread_id: str) -> str | None:
    from runtime.thread_runner import latest_checkpoint_id

    with pool.connection() as conn:
        return latest_checkpoint_id(conn, thread_id)


def insert_run(pool: Any, run_id: str, thread_id: str, graph: str, opts: dict[str, Any], actor: str, *, job_id: int | None,
               checkpoint: str | None, status: str = "pending", from_event: int = 0, token_id: int | None = None) -> dict[str, Any]:
    """Store the run (and its thread's API metadata) in one statement; the run as the API
    shows it, read with where its job stands in that same statement."""
    from web.langgraph_api.assistants import assistant_id

    kwargs = {k: opts[k] for k in ("input", "command", "config", "context", "interrupt_before", "interrupt_after", "stream_mode",
                                    "stream_subgraphs", "on_completion")}
    with pool.connection() as conn:
        row = conn.execute(
            "WITH thread AS (INSERT INTO api_threads (thread_id, metadata) VALUES (%(t)s, %(meta)s) ON CONFLICT (thread_id) DO UPDATE "
            "  SET metadata = api_threads.metadata || EXCLUDED.metadata, updated_at = now()), "
            "stored AS (INSERT INTO api_runs (run_id, thread_id, assistant_id, graph, status, actor, metadata, kwargs, multitask_strategy, "
            "  job_id, from_checkpoint, webhook, from_event, token_id) VALUES (%(r)s, %(t)s, %(a)s, %(g)s, %(s)s, %(actor)s, %(m)s, %(k)s, "
            "  %(mt)s, %(j)s, %(c)s, %(w)s, %(e)s, %(tok)s) RETURNING *) " + _RUN.replace("FROM api_runs r", "FROM stored r"),
            {"t": thread_id, "meta": Jsonb({"graph_id": graph, "assistant_id": assistant_id(graph)}), "r": run_id, "a": assistant_id(graph),
             "g": graph, "s": status, "actor": actor, "m": Jsonb(opts["metadata"]), "k": Jsonb(kwargs), "mt": opts["multitask_strategy"],
             "j": job_id, "c": checkpoint, "w": opts["webhook"], "e": from_event, "tok": token_id}).fetchone()
    return as_run(row)


#: a run with where its job and thread stand, and how its job's run stopped, if it did (the
#: worker writes the stop before it closes the job)
_RUN = ("SELECT r.*, j.status AS job_status, j.result AS job_result, t.status AS thread_status, "
        "(SELECT e.event->>'status' FROM progress_events e WHERE e.thread_id = r.thread_id AND e.id > r.from_event "
        "  AND e.event->>'event' = 'stop' AND e.event->>'job' = r.job_id::text ORDER BY e.id DESC LIMIT 1) AS stop_status "
        "FROM api_runs r LEFT JOIN jobs j ON j.id = r.job_id LEFT JOIN threads t ON t.thread_id = r.thread_id ")


def live_status(row: dict[str, Any]) -> str:
    """Where the run stands, from its job and its thread (read only)."""
    if row["status"] in FINAL:
        return row["status"]
    if row["job_id"] is None:
        return "pending"
    if row["job_status"] == "todo":
        return "pending"
    if row["job_status"] == "doing":
        stopped = row.get("stop_status")  # its stop is written; the job closes a moment later
        return {"waiting": "success", "finished": "success", "failed": "error", "cancelled": "interrupted"}.get(stopped, "running")
    if row["job_status"] == "failed":
        return "error"
    if row["job_status"] is None:  # pruned with a finished thread
        return "success"
    if row["thread_status"] in ("waiting", "finished"):
        return "success"
    if row["thread_status"] == "failed":
        return "error"
    if row["thread_status"] == "interrupted":
        return "interrupted"
    return "running"  # the job ended without a stop (drained, taken over): the thread's next job carries it


def _open_runs_on(conn: Any, thread_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(_RUN + "WHERE r.thread_id = %s AND r.status IN ('pending', 'running') ORDER BY r.created_at",
                        (thread_id,)).fetchall()
    return [r for r in rows if live_status(r) not in FINAL]


def run_rows(pool: Any, thread_id: str, *, run_id: str | None = None, limit: int = 10, offset: int = 0,
             status: str | None = None) -> list[dict[str, Any]]:
    where, args = "WHERE r.thread_id = %(t)s", {"t": thread_id, "limit": limit, "offset": offset}
    if run_id is not None:
        where += " AND r.run_id = %(r)s"
        args["r"] = run_id
    with pool.connection() as conn:
        rows = conn.execute(_RUN + where + " ORDER BY r.created_at DESC LIMIT %(limit)s OFFSET %(offset)s", args).fetchall()
    return [r for r in rows if status is None or live_status(r) == status]


def as_run(row: dict[str, Any]) -> dict[str, Any]:
    return {"run_id": str(row["run_id"]), "thread_id": row["thread_id"], "assistant_id": row["assistant_id"],
            "created_at": row["created_at"], "updated_at": row["updated_at"], "status": live_status(row),
            "metadata": row["metadata"], "kwargs": row["kwargs"], "multitask_strategy": row["multitask_strategy"]}


def valid_run_id(run_id: str) -> str:
    try:
        return str(uuid.UUID(run_id))
    except ValueError:
        raise HttpError(404, f"no run {run_id!r}") from None


def get_run(pool: Any, thread_id: str, run_id: str) -> dict[str, Any]:
    rows = run_rows(pool, valid_thread_id(thread_id), run_id=valid_run_id(run_id), limit=1)
    if not rows:
        raise HttpError(404, f"thread {thread_id} has no run {run_id}")
    return as_run(rows[0])


def cancel(pool: Any, row: dict[str, Any], actor: str, *, rollback: bool = False, wait: bool = False) -> None:
    """Cancel a run: a queued one leaves the queue; a running one stops at its next step
    boundary in whatever worker runs it (runtime/cancelling.py). `rollback` also removes the
    checkpoints the run wrote and the run itself, as LangGraph's server does."""
    status = live_status(row)
    if status in FINAL:
        return
    if status == "running" and not stop_running(pool, row):
        return  # it ended on its own first: its outcome stands
    body = run_body(pool, row, "interrupted", None) if row["webhook"] and not rollback else None
    with pool.connection() as conn, conn.transaction():
        if row["job_id"] is not None:
            gone = conn.execute("DELETE FROM jobs WHERE id = %s AND status = 'todo' RETURNING kind", (row["job_id"],)).fetchone()
            if gone is not None and gone["kind"] == "start":  # a thread queued for a run: nothing of it ran
                conn.execute("UPDATE threads SET status = CASE WHEN EXISTS (SELECT 1 FROM checkpoints c WHERE c.thread_id = %(t)s) "
                             "THEN 'finished' ELSE 'interrupted' END, updated_at = now() WHERE thread_id = %(t)s AND status = 'queued'",
                             {"t": row["thread_id"]})
        if rollback:
            after = row["from_checkpoint"] or ""
            for table in ("checkpoint_writes", "checkpoints"):
                conn.execute(f"DELETE FROM {table} WHERE thread_id = %s AND checkpoint_id > %s", (row["thread_id"], after))
            conn.execute("DELETE FROM api_runs WHERE run_id = %s", (row["run_id"],))
        else:
            conn.execute("UPDATE api_runs SET status = 'interrupted', updated_at = now() WHERE run_id = %s", (row["run_id"],))
            queue_on(conn, row, body)
    record_event(pool, row["thread_id"], actor, "run_cancelled", {"run_id": str(row["run_id"]), "rollback": rollback})


#: how long a cancel waits for the worker running the run to reach a step boundary
CANCEL_WAIT_SECONDS = 60.0


def stop_running(pool: Any, row: dict[str, Any]) -> bool:
    """Ask the worker running the run to stop it, until its job is no longer running; True if
    it was cancelled, False if it ended on its own first. The request is repeated: the worker
    may be about to start the run when the first one arrives."""
    import time

    from runtime.cancelling import request_cancel

    deadline = time.monotonic() + CANCEL_WAIT_SECONDS
    while True:
        with pool.connection() as conn:
            job = conn.execute("SELECT status, result FROM jobs WHERE id = %s", (row["job_id"],)).fetchone()
        if job is None or job["status"] != "doing":
            break
        if time.monotonic() > deadline:
            raise HttpError(409, f"run {row['run_id']} did not reach a step boundary within {CANCEL_WAIT_SECONDS:.0f} s: try again")
        request_cancel(pool, row["thread_id"])
        time.sleep(0.1)
    return job is not None and (job["status"] == "todo" or job["result"] == "cancelled")


def result_of(pool: Any, thread_id: str, assistant: str | None = None) -> dict[str, Any]:
    """What `runs.wait` and `runs.join` return: the thread's values, with its interrupts.
    Given the run's assistant, read through its graph bound once (bound.py) rather than
    the thread's runner."""
    from web.langgraph_api.threads import interrupt_json, runner_of

    config = {"configurable": {"thread_id": thread_id}}
    if assistant is not None:
        from web.langgraph_api.assistants import entry_for
        from web.langgraph_api.bound import bound_graph

        snapshot = bound_graph(pool, entry_for(assistant)).get_state(config)
    else:
        snapshot = runner_of(pool, thread_id).graph.get_state(config)
    values = dict(snapshot.values) if isinstance(snapshot.values, dict) else {"__values__": snapshot.values}
    interrupts = [interrupt_json(i) for t in snapshot.tasks for i in t.interrupts]
    if interrupts:
        values["__interrupt__"] = interrupts
    return values
