"""Approval policy: who must sign off an action with money behind it, in which order, how many.

One documented place: a `signoff.toml` loaded into the database with `signoff policy load
FILE` (shown by `signoff policy show`). A file, not environment variables, because roles with
member lists and ordered stages with thresholds and quorums are structured data that env vars
would need a mini-language for; and stored in the database, not read from each machine's disk,
so every CLI, worker and server applies the same policy, and an approver cannot bring their
own by pointing an environment variable at another file.

The shipped example, `examples/signoff.toml` (the tests load it), shows every field.

A gate's chain for an action of amount A is every stage with `above` < A, in order of `above`;
none (A at or under every threshold): one stage that any reviewer may decide. With no policy
loaded the defaults apply (support-lead above 100, finance above 1000, one approval each) and
no roles are configured: anyone but the requester may decide a stage. Who acts is never a
typed name (checkpoint/identity.py). Whoever started a thread never approves a stage of its
chain, and one person counts once per chain (separation of duties).

Loading a policy is an administrative act, for the `admins` the policy in force names. Every
load is a new version (`policy_versions`), never an overwrite; the newest is in force, except
for a request whose requester loaded it after the request: that request keeps the version
before (no one changes the rules of their own request). Approvals are counted against the
policy that applies when they are counted: a member removed since no longer counts.

Thresholds are amounts in one currency, the policy's `currency`. An action in another currency
is never compared with them (no exchange rates, and 100 JPY is not 100 USD): it needs every
stage of its gate's chain, whatever its amount (fail safe: an unknown value is treated as a
large one, never as a small one).
"""

from __future__ import annotations

import re
import tomllib
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterator

from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from checkpoint.audit import record_event_on
from checkpoint.errors import Conflict, InvalidInput

#: The audit trail of acts on no thread (policy loads, tokens), under an id no thread can have.
ADMIN_TRAIL = "-"

MAX_POLICY_BYTES = 64 * 1024
ROLE_NAME = re.compile(r"[a-z][a-z0-9-]{0,39}")
CURRENCY = re.compile(r"[A-Z]{3}")
DEFAULT_CURRENCY = "USD"
MAX_MEMBERS = 100


class PolicyError(InvalidInput):
    """The policy file is not valid; the message says where."""


class NotAllowed(Conflict):
    """This person may not decide this stage (not in its role, the requester, already counted)."""


@dataclass(frozen=True)
class Stage:
    role: str | None  # None: any reviewer
    above_cents: int
    quorum: int = 1
    deadline_hours: float | None = None

    @property
    def name(self) -> str:
        return self.role or "review"


@dataclass(frozen=True)
class Policy:
    roles: dict[str, tuple[str, ...]] = field(default_factory=dict)
    gates: dict[str, tuple[Stage, ...]] = field(default_factory=dict)
    source: str = "defaults"
    currency: str = DEFAULT_CURRENCY  # the currency of every threshold
    #: who may load a policy and create or revoke tokens (none named: the local OS user)
    admins: tuple[str, ...] = ()
    #: the stored version (None: the defaults, never loaded), who loaded it (and who minted the
    #: token they loaded it through) and when
    version: int | None = None
    loaded_by: str | None = None
    loaded_at: datetime | None = None
    loaded_through: str | None = None

    def loaded_for(self, requester: str | None, requested_at: datetime | None) -> bool:
        """Loaded by the requester (or through a token they minted) after the request."""
        return (requester is not None and requested_at is not None and self.loaded_at is not None
                and requester in (self.loaded_by, self.loaded_through) and self.loaded_at > requested_at)

    @property
    def roles_configured(self) -> bool:
        return bool(self.roles)

    def chain(self, graph: str, gate: str, amount_cents: int, currency: str | None = None) -> tuple[Stage, ...]:
        """The stages an action of this amount needs, in order. An amount in a currency other
        than the policy's cannot be compared with its thresholds: every stage (fail safe)."""
        stages = sorted(self.gates.get(f"{graph}.{gate}", DEFAULT_STAGES if f"{graph}.{gate}" == "support.review" else ()),
                        key=lambda s: s.above_cents)
        if self.foreign(currency):
            return tuple(stages) or (Stage(None, 0),)
        needed = tuple(s for s in stages if amount_cents > s.above_cents)
        return needed or (Stage(None, 0),)

    def foreign(self, currency: str | None) -> bool:
        """An amount in this currency is not compared with the thresholds (see the module doc)."""
        return currency is not None and currency != self.currency

    def members(self, stage: Stage) -> tuple[str, ...]:
        return self.roles.get(stage.role, ()) if stage.role else ()


DEFAULT_STAGES = (Stage("support-lead", 100_00), Stage("finance", 1000_00))
DEFAULT = Policy()


# --- the file ----------------------------------------------------------------------------------


def _positive_number(value: Any, where: str, *, whole: bool = False, upper: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value <= 0 or value > upper or (whole and value != int(value)):
        raise PolicyError(f"{where} must be a positive {'whole ' if whole else ''}number up to {upper:g}, not {value!r}")
    return float(value)


def parse_policy(text: str, source: str) -> Policy:
    """The policy in a signoff.toml, every part checked (PolicyError naming what is wrong)."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_POLICY_BYTES:
        raise PolicyError(f"{source}: over {MAX_POLICY_BYTES} bytes")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: not valid TOML ({exc})") from None
    unknown = set(data) - {"roles", "gates", "currency", "admins"}
    if unknown:
        raise PolicyError(f"{source}: unknown section(s) {', '.join(sorted(unknown))}: only currency, admins, [roles] and [gates.\"GRAPH.GATE\"]")
    admins = data.get("admins", [])
    if not _names(admins) or ("admins" in data and not admins):
        raise PolicyError(f"{source}: admins needs a list of 1-{MAX_MEMBERS} user names (printable, no spaces around)")
    currency = data.get("currency", DEFAULT_CURRENCY)
    if not isinstance(currency, str) or not CURRENCY.fullmatch(currency):
        raise PolicyError(f"{source}: currency must be a three-letter code such as \"USD\" (the currency of every `above`), not {str(currency)[:20]!r}")
    roles: dict[str, tuple[str, ...]] = {}
    for role, members in (data.get("roles") or {}).items():
        if not ROLE_NAME.fullmatch(role):
            raise PolicyError(f"{source}: role {role[:40]!r} must be lower-case letters, digits and '-'")
        if not members or not _names(members):
            raise PolicyError(f"{source}: role {role} needs a list of 1-{MAX_MEMBERS} user names (printable, no spaces around)")
        roles[role] = tuple(dict.fromkeys(members))
    gates: dict[str, tuple[Stage, ...]] = {}
    for key, body in (data.get("gates") or {}).items():
        if not re.fullmatch(r"[a-z]+\.[a-z_]+", key) or not isinstance(body, dict) or set(body) != {"stages"} or not isinstance(body["stages"], list):
            raise PolicyError(f"{source}: [gates.{key!r}] must be named \"GRAPH.GATE\" and hold only `stages = [...]`")
        stages = []
        for n, stage in enumerate(body["stages"], start=1):
            where = f"{source}: {key} stage {n}"
            if not isinstance(stage, dict) or not set(stage) <= {"role", "above", "quorum", "deadline_hours"} or "role" not in stage or "above" not in stage:
                raise PolicyError(f"{where}: needs role and above (optional: quorum, deadline_hours)")
            role = stage["role"]
            if roles and role not in roles:
                raise PolicyError(f"{where}: role {str(role)[:40]!r} is not defined in [roles]")
            if not isinstance(role, str) or not ROLE_NAME.fullmatch(role):
                raise PolicyError(f"{where}: role must be a role name")
            above = stage["above"]
            if isinstance(above, bool) or not isinstance(above, (int, float)) or above != above or above < 0 or above > 1e10:
                raise PolicyError(f"{where}: above must be an amount from 0 to 1e10, not {above!r}")
            quorum = int(_positive_number(stage.get("quorum", 1), f"{where}: quorum", whole=True, upper=MAX_MEMBERS))
            if roles and quorum > len(roles[role]):
                raise PolicyError(f"{where}: quorum {quorum} is more than the {len(roles[role])} members of {role}")
            hours = stage.get("deadline_hours")
            stages.append(Stage(role, int(round(above * 100)), quorum,
                                _positive_number(hours, f"{where}: deadline_hours", upper=87840) if hours is not None else None))
        gates[key] = tuple(stages)
    if roles and "support.review" not in gates and not {s.role for s in DEFAULT_STAGES} <= set(roles):
        raise PolicyError(f"{source}: with [roles], either define [gates.\"support.review\"] stages or the roles of its "
                          f"default stages ({', '.join(str(s.role) for s in DEFAULT_STAGES)}), so refunds have someone to approve them")
    return Policy(roles, gates, source, currency, tuple(dict.fromkeys(admins)))


def _names(value: Any) -> bool:
    """A list of at most MAX_MEMBERS user names (one printable line each, no spaces around)."""
    return isinstance(value, list) and len(value) <= MAX_MEMBERS and all(
        isinstance(m, str) and m and len(m) <= 100 and m.isprintable() and m.strip() == m for m in value)


def _as_document(policy: Policy) -> dict[str, Any]:
    return {"currency": policy.currency, "admins": list(policy.admins), "roles": {r: list(m) for r, m in policy.roles.items()},
            "gates": {k: [{"role": s.role, "above_cents": s.above_cents, "quorum": s.quorum, "deadline_hours": s.deadline_hours} for s in v]
                      for k, v in policy.gates.items()}}


def _from_row(row: dict[str, Any]) -> Policy:
    document = row["document"]
    return Policy({r: tuple(m) for r, m in document["roles"].items()},
                  {k: tuple(Stage(s["role"], s["above_cents"], s["quorum"], s["deadline_hours"]) for s in v) for k, v in document["gates"].items()},
                  row["source"], document.get("currency", DEFAULT_CURRENCY),  # stored before the currency key: the default
                  tuple(document.get("admins") or ()), int(row["version"]), row["loaded_by"], row["loaded_at"], row["loaded_through"])


_COLUMNS = "version, source, document, loaded_by, loaded_at, loaded_through"


def store_policy(pool: ConnectionPool, policy: Policy, actor: str, loaded_through: str | None = None) -> int:
    """Keep `policy` as the newest version, loaded by `actor` (through a token minted by
    `loaded_through`, if any), audited in the same transaction; its version number. Earlier
    versions stay as they were."""
    with pool.connection() as conn, conn.transaction():
        version = int(conn.execute("INSERT INTO policy_versions (source, document, loaded_by, loaded_through) VALUES (%s, %s, %s, %s) "
                                   "RETURNING version", (policy.source, Jsonb(_as_document(policy)), actor, loaded_through)).fetchone()["version"])
        record_event_on(conn, ADMIN_TRAIL, actor, "policy_loaded", {"version": version, "source": policy.source[:200],
                                                                    "admins": list(policy.admins), "roles": sorted(policy.roles)}
                        | ({"through_token_minted_by": loaded_through} if loaded_through else {}))
    return version


def current_policy(pool: ConnectionPool, conn: Any = None) -> Policy:
    """The newest version loaded (the defaults when none was)."""
    with connection_for(pool, conn) as c:
        row = c.execute(f"SELECT {_COLUMNS} FROM policy_versions ORDER BY version DESC LIMIT 1").fetchone()
    return _from_row(row) if row else DEFAULT


def policy_for_request(pool: ConnectionPool, requester: str | None, requested_at: datetime | None, conn: Any = None,
                       newest: Policy | None = None) -> Policy:
    """The policy that applies to a request: the newest version, unless its requester loaded it
    after the request (themselves, or through a token they minted); then the newest one they
    did not load since (no one changes the rules of their own request). `newest`:
    current_policy, when the caller already has it."""
    newest = newest if newest is not None else current_policy(pool, conn)
    if not newest.loaded_for(requester, requested_at):
        return newest
    with connection_for(pool, conn) as c:
        row = c.execute(f"SELECT {_COLUMNS} FROM policy_versions WHERE NOT (%s IN (loaded_by, coalesce(loaded_through, '')) AND loaded_at > %s) "
                        "ORDER BY version DESC LIMIT 1", (requester, requested_at)).fetchone()
    return _from_row(row) if row else DEFAULT


def history(pool: ConnectionPool) -> list[Policy]:
    """Every version loaded, oldest first."""
    with pool.connection() as conn:
        return [_from_row(r) for r in conn.execute(f"SELECT {_COLUMNS} FROM policy_versions ORDER BY version")]


def check_successor(current: Policy, new: Policy) -> None:
    """A policy that names administrators is followed only by one that names them too: a
    version without `admins` would make every local user one again."""
    if current.admins and not new.admins:
        raise PolicyError(f"{new.source}: the policy in force names administrators ({', '.join(current.admins)}): "
                          "keep an `admins = [...]` list, or every local user would become one")


@contextmanager
def connection_for(pool: ConnectionPool, conn: Any) -> Iterator[Any]:
    """`conn` when the caller holds one (never a second from the pool meanwhile), else one from the pool."""
    if conn is not None:
        yield conn
    else:
        with pool.connection() as pooled:
            yield pooled
