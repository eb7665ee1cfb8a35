"""How the setup and housekeeping commands show what they read: the configuration, migrations,
a prune report, knowledge-base hits, the corpus, the approval policy, orders, the local model
server, reviewer tokens and live workers; a listing for people, or one JSON document.

Kept out of cli.py, which declares the commands and checks their arguments. Every field that
can come from a file, a database row or the environment is shown as one safe line
(console/display.py), and listings are never cut to the terminal's width.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from rich.markup import escape

from console.display import age, safe_line
from console.terminal import emit, out


def print_config(described: list[tuple[str, str, str]], *, as_json: bool) -> None:
    if as_json:
        emit({"settings": [{"variable": name, "value": value, "note": note} for name, value, note in described]})
        return
    rows = [("variable", "value", "note")] + [tuple(safe_line(cell) for cell in row) for row in described]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for name, value, note in rows:  # whole values, never cut to the terminal's width
        out.print(f"{name:<{widths[0]}}  {value:<{widths[1]}}  {note}", soft_wrap=True)


def print_migrations(rows: list[Any], *, as_json: bool) -> None:
    if as_json:
        emit({"migrations": [{"version": row.version, "name": row.name, "applied_at": row.applied_at} for row in rows]})
        return
    for row in rows:
        when = f"applied {row.applied_at:%Y-%m-%d %H:%M:%S}" if row.applied_at else "pending"
        out.print(f"{row.version:03d}_{row.name}  {when}")


def print_prune(report: Any, days: float, *, dry_run: bool, as_json: bool) -> None:
    if as_json:
        emit({**report.as_dict(), "finished_older_than_days": days})
        return
    if not report.threads:
        out.print(f"nothing to prune: no thread finished {days:g}+ days ago has more than its last checkpoint")
    else:
        rows = report.rows
        out.print(f"{'would prune' if dry_run else 'pruned'} {report.threads} finished thread{'s' if report.threads != 1 else ''}: "
                  f"{rows['checkpoints']} checkpoints, {rows['checkpoint_writes']} writes, {rows['checkpoint_blobs']} blobs, "
                  f"{rows['jobs']} jobs, {rows['progress_events']} progress events, "
                  f"{report.bytes / 1e6:.2f} MB of row data{' (nothing deleted)' if dry_run else ' freed'}; the last checkpoint "
                  "and last stop event of each, and its threads, decisions, audit and side-effect rows, are kept. PostgreSQL reuses the space "
                  "(VACUUM FULL returns it to the operating system)", soft_wrap=True)
    if report.skipped:
        out.print(f"{len(report.skipped)} thread(s) changed meanwhile and were skipped: run `signoff db prune` again")


def print_kb_hits(query: str, hits: list[Any], *, as_json: bool) -> None:
    if as_json:
        emit({"query": query, "hits": [{"rank": round(float(hit.rank), 6), "slug": hit.slug, "title": hit.title, "category": hit.category} for hit in hits]})
        return
    if not hits:
        out.print("no matching articles")
    for hit in hits:
        out.print(f"{hit.rank:.3f}  {escape('[' + hit.category + ']')} {safe_line(hit.slug)}: {safe_line(hit.title)}", soft_wrap=True)


def print_corpus(entries: list[Any], *, as_json: bool) -> None:
    if as_json:
        emit({"documents": [{"source": e.source, "title": e.title, "chunks": e.chunk_count, "loaded_at": e.loaded_at} for e in entries]})
        return
    if not entries:
        out.print("the corpus is empty: add files with `signoff corpus add PATH...` (no path: the sample corpus)")
        return
    sources = [safe_line(entry.source) for entry in entries]
    width = max(len(source) for source in sources)
    for entry, source in zip(entries, sources):
        out.print(f"{source:<{width}}  {entry.chunk_count:>3} chunks  {entry.loaded_at:%Y-%m-%d %H:%M}  {safe_line(entry.title)}", soft_wrap=True)


def print_policy(policy: Any, *, as_json: bool) -> None:
    """The policy in force; with no gates configured, the default single review stage."""
    from checkpoint.policy import DEFAULT_STAGES

    gates = dict(policy.gates) or {"support.review": DEFAULT_STAGES}
    if as_json:
        emit({"source": policy.source, "version": policy.version, "loaded_by": policy.loaded_by,
              "loaded_at": policy.loaded_at.isoformat() if policy.loaded_at else None, "admins": list(policy.admins),
              "currency": policy.currency, "roles": {r: list(m) for r, m in policy.roles.items()},
              "gates": {k: [{"role": st.role, "above": st.above_cents / 100, "quorum": st.quorum, "deadline_hours": st.deadline_hours}
                            for st in v] for k, v in gates.items()}})
        return
    loaded = f" (version {policy.version}, loaded by {safe_line(policy.loaded_by)} at {policy.loaded_at:%Y-%m-%d %H:%M %Z})" if policy.version else ""
    out.print(f"policy: {safe_line(policy.source)}{loaded}" + ("" if policy.roles_configured else "; no roles configured: any reviewer but the requester decides"),
              soft_wrap=True)
    out.print(f"administrators: {safe_line(', '.join(policy.admins))}" if policy.admins else
              "administrators: none named; the local operating-system user loads policies and creates tokens", soft_wrap=True)
    out.print(f"thresholds in {policy.currency}: an amount in another currency needs every stage of its gate")
    for role, members in policy.roles.items():
        out.print(f"role {safe_line(role)}: {safe_line(', '.join(members))}", soft_wrap=True)
    for key, stages in gates.items():
        for n, st in enumerate(stages, start=1):
            out.print(f"{safe_line(key)} stage {n}: {safe_line(st.role or 'review')} above {st.above_cents / 100:.2f}, "
                      f"{st.quorum} approval{'s' if st.quorum > 1 else ''}" + (f", deadline {st.deadline_hours:g}h" if st.deadline_hours else ""), soft_wrap=True)


def print_orders(orders: list[Any], *, as_json: bool) -> None:
    import json

    from nodes.orders import format_amount

    if as_json:
        out.print(escape(json.dumps([o.as_json() for o in orders], ensure_ascii=True)), soft_wrap=True)
        return
    if not orders:
        out.print("no orders: load the demo orders with `signoff orders load` (or pass a CSV)")
        return
    for o in orders:
        out.print(f"{safe_line(o.order_id):<10}  {o.ordered_at:%Y-%m-%d}  {format_amount(o.amount_cents):>10} {o.currency}  "
                  f"{o.status:<9}  {safe_line(o.email)}", soft_wrap=True)


def print_model_server(info: Optional[Any], *, as_json: bool) -> None:
    if as_json:
        emit({"running": info is not None, "pid": info.pid if info else None, "base_url": info.base_url if info else None,
              "model": info.model_alias if info else None, "weights": str(info.model_path) if info else None,
              "started_at": datetime.fromtimestamp(info.started_at, timezone.utc) if info else None})
        return
    if info is None:
        out.print("local model server: not running (it starts on first use)")
        return
    started = datetime.fromtimestamp(info.started_at, timezone.utc)
    out.print(f"local model server: running, pid {info.pid}, {info.base_url}, model {info.model_alias}, "
              f"up {age(datetime.now(timezone.utc) - started)}\nweights: {info.model_path}")


def print_tokens(rows: list[Any]) -> None:
    if not rows:
        out.print("no reviewer tokens: create one with `signoff token create NAME`")
    for t in rows:
        used = f"{t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "never"
        state = f"revoked {t.revoked_at:%Y-%m-%d %H:%M}" + (f" by {safe_line(t.revoked_by)}" if t.revoked_by else "") if t.revoked_at else "live"
        by = f" by {safe_line(t.created_by)}" if t.created_by else ""
        out.print(f"{safe_line(t.name)}  created {t.created_at:%Y-%m-%d %H:%M}{by}  last used {used}  {state}", soft_wrap=True)


def print_policy_history(versions: list[Any], *, as_json: bool) -> None:
    """Every policy version loaded, oldest first."""
    if as_json:
        emit([{"version": p.version, "source": p.source, "loaded_by": p.loaded_by, "loaded_at": p.loaded_at.isoformat(),
               "admins": list(p.admins), "roles": {r: list(m) for r, m in p.roles.items()}} for p in versions])
        return
    if not versions:
        out.print("no policy was loaded: the defaults apply (`signoff policy show`)")
    for p in versions:
        out.print(f"version {p.version}  {p.loaded_at:%Y-%m-%d %H:%M:%S %Z}  by {safe_line(p.loaded_by)}  from {safe_line(p.source)}", soft_wrap=True)


def print_workers(rows: list[Any]) -> None:
    if not rows:
        out.print("no worker is running: start one with `signoff worker`")
        return
    now = datetime.now(timezone.utc)
    lines = [("id", "host", "pid", "started", "heartbeat", "running", "concurrency", "done", "state")] + [
        (str(w.id), w.host, str(w.pid), f"{w.started_at:%Y-%m-%d %H:%M:%S} ({age(now - w.started_at)} ago)",
         f"{w.heartbeat_age:.1f}s ago", str(w.running), str(w.concurrency), str(w.done), "draining" if w.draining else "serving")
        for w in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        out.print("  ".join(safe_line(cell).ljust(width) for cell, width in zip(line, widths)), soft_wrap=True)
