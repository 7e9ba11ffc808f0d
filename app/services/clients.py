"""API keys for client applications (created once, stored hashed, revoked by id), and who is
calling: the admin, or a client identified by its key.

A key is scoped: to the tasks it was given (any other task answers as if it did not exist)
and to what it may do there (`SCOPES`).  Services call `allow(caller, scope=..., task=...)` before
they touch a task on a caller's behalf.

A client key's lookup is remembered for `KEY_CACHE_TTL_S` seconds, so the hot paths (predict,
feedback) usually resolve the caller without a database round trip.  A revocation made
through the ORM in this process forgets the key at once; other API processes honour it
within the TTL.  A key found live is also remembered as good for `KNOWN_GOOD_TTL_S`: it is
still looked up after the TTL, but never refused for its address's failed authentications.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, event, select
from sqlalchemy.orm import Session, sessionmaker

from app.db.paging import Page, cut, paged
from app.db.session import rowcount, transaction
from app.db.tables import Client, ClientTask, Feedback, Task, utcnow
from app.db.threads import in_db_thread
from app.core.errors import Forbidden, Invalid, NotFound, RateLimited
from app.core.security import hash_api_key, new_api_key, same_secret
from app.process.state import AppState

# What a client key may do on its tasks: predict; give feedback on its own predictions; read the
# task's description and its review queue.  Everything else (tasks, examples, runs, versions,
# keys, erasure) is the admin's.
SCOPES = ("predict", "feedback", "read")


@dataclass(frozen=True)
class Caller:
    is_admin: bool
    client_id: int | None
    name: str
    scopes: frozenset[str] = frozenset(SCOPES)
    tasks: frozenset[str] | None = None  # the task names this key may use; None = every task (admin)

    def sees(self, task: str) -> bool:
        return self.tasks is None or task in self.tasks


ADMIN = Caller(is_admin=True, client_id=None, name="admin")


def allow(caller: Caller, *, scope: str, task: str | None = None) -> None:
    """NotFound for a task outside the caller's (as if it did not exist, so a key cannot probe
    for other teams' tasks), Forbidden for a scope it lacks on one of its own."""
    if task is not None and not caller.sees(task):
        raise NotFound.of("task", task, field="task")
    if scope not in caller.scopes:
        raise Forbidden(f"This key may not {scope} (its scopes: {', '.join(sorted(caller.scopes)) or 'none'}).",
                        field="Authorization", slug="missing-scope", title="Missing scope")


def create_client(state: AppState, *, name: str, tasks: list[str], scopes: list[str], trusted: bool = False
                  ) -> tuple[dict[str, Any], str]:
    """A new client scoped to `tasks` and `scopes`, and its key; the key exists only in this
    return value, its hash is stored.  Every task must exist (422 names the missing ones)."""
    key = new_api_key()
    with transaction(state.sessions) as s:
        found = dict(s.execute(select(Task.name, Task.id).where(Task.name.in_(tasks))).all())
        missing = [t for t in tasks if t not in found]
        if missing:
            raise Invalid("tasks", f"No task named {', '.join(map(repr, missing))}.", slug="unknown-task")
        client = Client(name=name, key_hash=hash_api_key(key), key_prefix=key[:10],
                        scopes=[sc for sc in SCOPES if sc in scopes], trusted=trusted)
        _unknown_keys.pop(client.key_hash, None)
        s.add(client)
        s.flush()
        s.add_all(ClientTask(client_id=client.id, task_id=found[t]) for t in dict.fromkeys(tasks))
        shown = describe_client(s, client=client)
    return shown, key


def describe_client(session: Session, *, client: Client) -> dict[str, Any]:
    """A client as the API shows it: its key's prefix, scopes and task names, never its hash."""
    names = session.scalars(select(Task.name).join(ClientTask, ClientTask.task_id == Task.id)
                            .where(ClientTask.client_id == client.id).order_by(Task.name)).all()
    return {"id": client.id, "name": client.name, "key_prefix": client.key_prefix, "tasks": list(names),
            "scopes": list(client.scopes), "trusted": client.trusted, "created_at": client.created_at,
            "revoked_at": client.revoked_at}


def set_trusted(state: AppState, *, client_id: int, trusted: bool) -> dict[str, Any]:
    """Vouch for a key's feedback (its votes become known truth for the noise model), or stop."""
    with transaction(state.sessions) as s:
        client = s.get(Client, client_id)
        if client is None:
            raise _unknown_client(client_id)
        client.trusted = trusted
        return describe_client(s, client=client)


def _unknown_client(client_id: int) -> NotFound:
    return NotFound(f"No client with id {client_id}.", field="client_id", slug="unknown-client",
                    title="Unknown client")


def revoke_client(state: AppState, *, client_id: int, purge: bool = False) -> dict[str, Any]:
    """Revoke a key at once.  With `purge`, its feedback is deleted too, so no future training
    run or gate sees it (versions already trained on it keep what they learnt); the answer
    says how many signals went."""
    with transaction(state.sessions) as s:
        client = s.get(Client, client_id)
        if client is None:
            raise _unknown_client(client_id)
        if client.revoked_at is None:
            client.revoked_at = utcnow()
        purged = rowcount(s.execute(delete(Feedback).where(Feedback.client_id == client_id))) if purge else 0
        return {**describe_client(s, client=client), "purged_feedback": purged}


def list_clients(state: AppState, *, page: Page = Page()) -> tuple[list[dict[str, Any]], int | None]:
    """A page of the clients, oldest first, and the next page's cursor."""
    with state.sessions() as s:
        rows, after = cut(s.scalars(paged(select(Client), Client.id, page)).all(), page, lambda c: c.id)
        return [describe_client(s, client=c) for c in rows], after


# ---------------------------------------------------------------- who is calling

KEY_CACHE_TTL_S = 2.0
KEY_CACHE_MAX = 10_000
# key hash -> (expires at, id of the app's sessionmaker, caller); only known, live keys
_key_cache: dict[str, tuple[float, int, Caller]] = {}
# Keys looked up and not found (or revoked), so the same bogus key repeated costs no lookup.
UNKNOWN_KEY_TTL_S = 30.0
# key hash -> (expires at, id of the app's sessionmaker)
_unknown_keys: dict[str, tuple[float, int]] = {}
# Keys found live within this long.  Still looked up again once KEY_CACHE_TTL_S has passed (so a
# revocation applies), but that lookup is not held to the address's failure budget: bogus keys
# sent through the same NAT or proxy cannot lock out a key that works.
KNOWN_GOOD_TTL_S = 24 * 3600.0
# key hash -> (expires at, id of the app's sessionmaker)
_known_good: dict[str, tuple[float, int]] = {}


@event.listens_for(Client.revoked_at, "set")
def _forget_revoked_key(target: Client, value: Any, oldvalue: Any, initiator: Any) -> None:
    if target.key_hash is not None:
        _key_cache.pop(target.key_hash, None)
        _known_good.pop(target.key_hash, None)


def _lookup_client(sessions: sessionmaker[Session], key_hash: str) -> Caller | None:
    with sessions() as session:
        row = session.execute(
            select(Client.id, Client.name, Client.scopes, Client.revoked_at).where(Client.key_hash == key_hash)
        ).one_or_none()
        if row is None or row.revoked_at is not None:
            return None
        tasks = session.scalars(select(Task.name).join(ClientTask, ClientTask.task_id == Task.id)
                                .where(ClientTask.client_id == row.id)).all()
    return Caller(is_admin=False, client_id=row.id, name=row.name, scopes=frozenset(row.scopes),
                  tasks=frozenset(tasks))


async def caller_for_token(state: AppState, *, token: str, before_lookup: Callable[[], None] | None = None
                           ) -> Caller | None:
    """The admin (the admin token), a live client (its key), or None for an unknown or revoked key.
    `before_lookup` runs only when the answer is not cached and the database must be asked about
    a key not known to be good (one found live within KNOWN_GOOD_TTL_S is asked about without it)."""
    admin_token = state.settings.admin_token
    if admin_token is not None and same_secret(token, admin_token):
        return ADMIN
    sessions = state.sessions
    key_hash = hash_api_key(token)
    now = time.monotonic()
    hit = _key_cache.get(key_hash)
    if hit is not None and hit[0] > now and hit[1] == id(sessions):
        return hit[2]
    miss = _unknown_keys.get(key_hash)
    if miss is not None and miss[0] > now and miss[1] == id(sessions):
        return None
    good = _known_good.get(key_hash)
    if before_lookup is not None and not (good is not None and good[0] > now and good[1] == id(sessions)):
        before_lookup()
    caller = await in_db_thread(_lookup_client, sessions, key_hash)
    if caller is None:
        _key_cache.pop(key_hash, None)
        _known_good.pop(key_hash, None)
        if len(_unknown_keys) >= KEY_CACHE_MAX:
            _unknown_keys.clear()
        _unknown_keys[key_hash] = (now + UNKNOWN_KEY_TTL_S, id(sessions))
        return None
    if len(_key_cache) >= KEY_CACHE_MAX:
        _key_cache.clear()
    if len(_known_good) >= KEY_CACHE_MAX:
        _known_good.clear()
    _key_cache[key_hash] = (now + KEY_CACHE_TTL_S, id(sessions), caller)
    _known_good[key_hash] = (now + KNOWN_GOOD_TTL_S, id(sessions))
    return caller


async def caller_for_key_hash(state: AppState, *, key_hash: str) -> Caller | None:
    """The live client whose key hashes to `key_hash` (a console session keeps the hash, never
    the key); None once the key is revoked."""
    return await in_db_thread(_lookup_client, state.sessions, key_hash)


async def authenticate(state: AppState, *, token: str, address: str) -> Caller | None:
    """Who `token` belongs to, within the limits: an address that keeps failing gets 429 without
    a key lookup (a flood of bogus keys costs no database work), and a client key past its rate
    gets 429 (RateLimited, with the seconds to wait).  None: an unknown or revoked key."""
    failures = state.auth_failures

    def within_failure_budget() -> None:  # a key known good is answered without it: one proxy's bad
        wait = failures.exhausted(address)  # clients cannot lock out its good ones
        if wait:
            state.metrics.rate_limited.labels("auth").inc()
            raise RateLimited(f"Too many failed authentications from {address}; retry in {math.ceil(wait)}s.",
                              retry_after_s=math.ceil(wait), field="Authorization")

    caller = await caller_for_token(state, token=token, before_lookup=within_failure_budget)
    if caller is None:
        failures.take(address)
        return None
    spend_request(state, caller=caller)
    return caller


def spend_request(state: AppState, *, caller: Caller) -> None:
    """One request from a client key's rate (429 past it); the admin is not limited.  The API
    spends it when a key authenticates, the console on every page or action of a key's session."""
    if caller.is_admin:
        return
    rates = state.client_rates
    wait = rates.take(caller.client_id)
    if wait:
        state.metrics.rate_limited.labels("client").inc()
        raise RateLimited(f"Client {caller.name!r} is over {rates.rate:g} requests/s; retry in "
                          f"{math.ceil(wait)}s.", retry_after_s=math.ceil(wait), field="Authorization")
