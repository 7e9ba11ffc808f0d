"""API keys for client applications: created once, stored hashed, revoked by id."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.api.problems import Problem
from app.db.models import Client, utcnow
from app.security import hash_api_key, new_api_key


def create_client(session: Session, *, name: str) -> tuple[Client, str]:
    key = new_api_key()
    client = Client(name=name, key_hash=hash_api_key(key), key_prefix=key[:10])
    session.add(client)
    session.flush()
    return client, key


def revoke_client(session: Session, *, client_id: int) -> Client:
    client = session.get(Client, client_id)
    if client is None:
        raise Problem(404, "unknown-client", "Unknown client", f"No client with id {client_id}.", field="client_id")
    if client.revoked_at is None:
        client.revoked_at = utcnow()
    return client


def list_clients(session: Session) -> list[Client]:
    return list(session.scalars(select(Client).order_by(Client.id)))
