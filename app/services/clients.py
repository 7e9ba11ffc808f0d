"""API keys for client applications (created once, stored hashed, revoked by id), and who is
calling: the admin, or a client identified by its key.

A client key's lookup is remembered for `KEY_CACHE_TTL_S` seconds, so the hot paths (predict,
feedback) usually resolve the caller without a database round trip.  A revocation made
through the ORM in this process forgets the key at once; other API processes honour it
within the TTL.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session, sessionmaker

from app.db.session import transaction
from app.db.tables import Client, utcnow
from app.db.threads import in_db_thread
from app.errors import NotFound
from app.security import hash_api_key, new_api_key, same_secret


@dataclass(frozen=True)
class Caller:
    is_admin: bool
    client_id: int | None
    name: str


ADMIN = Caller(is_admin=True, client_id=None, name="admin")


def create_client(sessions: sessionmaker[Session], *, name: str) -> tuple[Client, str]:
    """A new client and its key; the key exists only in this return value, its hash is stored."""
    key = new_api_key()
    with transaction(sessions) as s:
        client = Client(name=name, key_hash=hash_api_key(key), key_prefix=key[:10])
        s.add(client)
        s.flush()
    return client, key


def revoke_client(sessions: sessionmaker[Session], *, client_id: int) -> Client:
    with transaction(sessions) as s:
        client = s.get(Client, client_id)
        if client is None:
            raise NotFound(f"No client with id {client_id}.", field="client_id", slug="unknown-client",
                           title="Unknown client")
        if client.revoked_at is None:
            client.revoked_at = utcnow()
    return client


def list_clients(sessions: sessionmaker[Session]) -> list[Client]:
    with sessions() as s:
        return list(s.scalars(select(Client).order_by(Client.id)))


# ---------------------------------------------------------------- who is calling

KEY_CACHE_TTL_S = 2.0
KEY_CACHE_MAX = 10_000
# key hash -> (expires at, id of the app's sessionmaker, caller); only known, live keys
_key_cache: dict[str, tuple[float, int, Caller]] = {}


@event.listens_for(Client.revoked_at, "set")
def _forget_revoked_key(target: Client, value: Any, oldvalue: Any, initiator: Any) -> None:
    if target.key_hash is not None:
        _key_cache.pop(target.key_hash, None)


def _lookup_client(sessions: sessionmaker[Session], key_hash: str) -> Caller | None:
    with sessions() as session:
        row = session.execute(
            select(Client.id, Client.name, Client.revoked_at).where(Client.key_hash == key_hash)
        ).one_or_none()
    if row is None or row.revoked_at is not None:
        return None
    return Caller(is_admin=False, client_id=row.id, name=row.name)


async def caller_for_token(sessions: sessionmaker[Session], token: str, *, admin_token: str | None) -> Caller | None:
    """The admin (the admin token), a live client (its key), or None for an unknown or revoked key."""
    if admin_token is not None and same_secret(token, admin_token):
        return ADMIN
    key_hash = hash_api_key(token)
    now = time.monotonic()
    hit = _key_cache.get(key_hash)
    if hit is not None and hit[0] > now and hit[1] == id(sessions):
        return hit[2]
    caller = await in_db_thread(_lookup_client, sessions, key_hash)
    if caller is None:
        _key_cache.pop(key_hash, None)
        return None
    if len(_key_cache) >= KEY_CACHE_MAX:
        _key_cache.clear()
    _key_cache[key_hash] = (now + KEY_CACHE_TTL_S, id(sessions), caller)
    return caller
