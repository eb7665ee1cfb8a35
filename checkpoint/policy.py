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
no roles are configured: anyone may decide a stage under a name of their choosing (--by), as
for every other gate. Whoever started a thread never approves a stage of its chain, and one
person counts once per chain (separation of duties).

Thresholds are amounts in one currency, the policy's `currency`. An action in another currency
is never compared with them (no exchange rates, and 100 JPY is not 100 USD): it needs every
stage of its gate's chain, whatever its amount (fail safe: an unknown value is treated as a
large one, never as a small one).
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from checkpoint.errors import Conflict, InvalidInput

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
    unknown = set(data) - {"roles", "gates", "currency"}
    if unknown:
        raise PolicyError(f"{source}: unknown section(s) {', '.join(sorted(unknown))}: only currency, [roles] and [gates.\"GRAPH.GATE\"]")
    currency = data.get("currency", DEFAULT_CURRENCY)
    if not isinstance(currency, str) or not CURRENCY.fullmatch(currency):
        raise PolicyError(f"{source}: currency must be a three-letter code such as \"USD\" (the currency of every `above`), not {str(currency)[:20]!r}")
    roles: dict[str, tuple[str, ...]] = {}
    for role, members in (data.get("roles") or {}).items():
        if not ROLE_NAME.fullmatch(role):
            raise PolicyError(f"{source}: role {role[:40]!r} must be lower-case letters, digits and '-'")
        if not isinstance(members, list) or not members or len(members) > MAX_MEMBERS or not all(
                isinstance(m, str) and m and len(m) <= 100 and m.isprintable() and m.strip() == m for m in members):
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
    return Policy(roles, gates, source, currency)


def _as_document(policy: Policy) -> dict[str, Any]:
    return {"currency": policy.currency, "roles": {r: list(m) for r, m in policy.roles.items()},
            "gates": {k: [{"role": s.role, "above_cents": s.above_cents, "quorum": s.quorum, "deadline_hours": s.deadline_hours} for s in v]
                      for k, v in policy.gates.items()}}


def _from_document(document: dict[str, Any], source: str) -> Policy:
    return Policy({r: tuple(m) for r, m in document["roles"].items()},
                  {k: tuple(Stage(s["role"], s["above_cents"], s["quorum"], s["deadline_hours"]) for s in v) for k, v in document["gates"].items()},
                  source, document.get("currency", DEFAULT_CURRENCY))  # stored before the currency key: the default


def store_policy(pool: ConnectionPool, policy: Policy, actor: str) -> None:
    with pool.connection() as conn, conn.transaction():
        conn.execute(
            "INSERT INTO approval_policy (id, source, document, loaded_by) VALUES (1, %s, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET source = EXCLUDED.source, document = EXCLUDED.document, "
            "loaded_by = EXCLUDED.loaded_by, loaded_at = now()",
            (policy.source, Jsonb(_as_document(policy)), actor),
        )


def current_policy(pool: ConnectionPool) -> Policy:
    with pool.connection() as conn:
        row = conn.execute("SELECT source, document FROM approval_policy WHERE id = 1").fetchone()
    return _from_document(row["document"], row["source"]) if row else DEFAULT


# --- who decides ---------------------------------------------------------------------------------


def os_user() -> str:
    """The OS account running this process (the real one, not $USER, which anyone can set)."""
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid without a passwd entry (some containers)
        return f"uid-{os.getuid()}"


def decider(policy: Policy, given: str | None) -> str | None:
    """Who decides: with roles configured, the OS user, and a different --by/SIGNOFF_USER is
    refused (None: keep the name as given)."""
    if not policy.roles_configured:
        return None
    me = os_user()
    if given is not None and given != me:
        raise InvalidInput(f"roles are configured ({policy.source}): you decide as your OS user {me!r}; "
                           "drop --by and SIGNOFF_USER (or set it to that name)")
    return me
