"""Who acts: never a name someone types.

On the command line it is the owner of the reviewer token in SIGNOFF_TOKEN when that is set
(the same tokens as the HTTP API and the web inbox, checkpoint/tokens.py), otherwise the
operating-system login running the command. Over HTTP it is the token's owner (web/app.py).
One name space: a policy's role members and administrators are these names.

Administrative acts (creating and revoking tokens, loading a policy) are for the
administrators the policy in force names (`admins = [...]`); until a policy names them, for
the local operating-system user acting as such (not through a token, whose name an
administrator chose for someone else).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Mapping

from psycopg_pool import ConnectionPool

from checkpoint.errors import InvalidInput
from checkpoint.policy import NotAllowed, Policy

TOKEN_VARIABLE = "SIGNOFF_TOKEN"
#: A typed name that once chose the actor: refused, so no script silently acts as someone else.
RETIRED_VARIABLE = "SIGNOFF_USER"
#: Names Signoff records for its own actions; a person never acts under them.
RESERVED = re.compile(r"(signoff|cli)(\s*\(.*\))?", re.IGNORECASE)


@dataclass(frozen=True)
class Identity:
    name: str
    #: the reviewer token acted through (None: the operating-system login), and who minted it
    token_id: int | None = None
    token_created_by: str | None = None

    @property
    def how(self) -> str:
        return f"the owner of the reviewer token in {TOKEN_VARIABLE}" if self.token_id is not None else "your operating-system login"


def os_user() -> str:
    """The OS account running this process (the real one, not $USER, which anyone can set)."""
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid without a passwd entry (some containers)
        return f"uid-{os.getuid()}"


def retired_by_option() -> InvalidInput:
    """What `--by NAME` now gets: the one line saying how the actor is chosen instead."""
    return InvalidInput(f"--by no longer chooses who acts: you act as your operating-system login ({os_user()}), "
                        f"or as the owner of the reviewer token in {TOKEN_VARIABLE}")


def cli_identity(pool: ConnectionPool, environ: Mapping[str, str] | None = None) -> Identity:
    """Who runs this command: the owner of the live token in SIGNOFF_TOKEN, else the OS login.
    A set SIGNOFF_USER, a wrong or revoked token, or a login Signoff reserves is refused."""
    from checkpoint.tokens import authenticate

    env = os.environ if environ is None else environ
    if env.get(RETIRED_VARIABLE):
        raise InvalidInput(f"{RETIRED_VARIABLE} no longer chooses who acts: unset it; you act as your operating-system login "
                           f"({os_user()}), or as the owner of the reviewer token in {TOKEN_VARIABLE}")
    token = (env.get(TOKEN_VARIABLE) or "").strip()
    if token:
        reviewer = authenticate(pool, token)
        if reviewer is None:
            raise InvalidInput(f"{TOKEN_VARIABLE} is not a live reviewer token (wrong, or revoked): unset it to act as "
                               f"your operating-system login ({os_user()}), or ask an administrator for a new one")
        return Identity(reviewer.name, reviewer.token_id, reviewer.created_by)
    name = os_user()
    if RESERVED.fullmatch(name) or not name.isprintable():
        raise InvalidInput(f"the login {name!r} is reserved for Signoff's own actions: act through a reviewer token ({TOKEN_VARIABLE})")
    return Identity(name)


def ensure_admin(policy: Policy, who: Identity, act: str) -> None:
    """NotAllowed unless `who` may perform this administrative act under `policy`."""
    if policy.admins:
        if who.name not in policy.admins:
            raise NotAllowed(f"{act} is for the administrators the policy names ({', '.join(policy.admins)}); "
                             f"you act as {who.name} ({who.how})")
    elif who.token_id is not None:
        raise NotAllowed(f"{act} is for the administrator, which until a policy names `admins` is the local "
                         f"operating-system user, not a reviewer token: unset {TOKEN_VARIABLE}")


def ensure_may_mint(policy: Policy, who: Identity, name: str) -> None:
    """An administrator's token is created only by that administrator: otherwise one
    administrator could act, and load policies, under another's name."""
    if name in policy.admins and name != who.name:
        raise NotAllowed(f"{name} is an administrator: only {name} creates a token for {name}")
