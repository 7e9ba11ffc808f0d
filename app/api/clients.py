"""API keys for client applications (admin)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from app.api.deps import AdminDep, SessionDep
from app.schemas import ClientCreate, ClientCreated, ClientOut
from app.services.clients import create_client, list_clients, revoke_client

router = APIRouter(tags=["clients"])


@router.post("/v1/clients", status_code=status.HTTP_201_CREATED, response_model=ClientCreated)
def create(body: ClientCreate, _: AdminDep, session: SessionDep) -> ClientCreated:
    """The key is in this answer only; the server keeps its hash."""
    with session.begin():
        client, key = create_client(session, name=body.name)
    return ClientCreated(key=key, **ClientOut.model_validate(client, from_attributes=True).model_dump())


@router.get("/v1/clients", response_model=list[ClientOut])
def list_all(_: AdminDep, session: SessionDep) -> list[ClientOut]:
    return [ClientOut.model_validate(c, from_attributes=True) for c in list_clients(session)]


@router.delete("/v1/clients/{client_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke(client_id: int, _: AdminDep, session: SessionDep) -> Response:
    """Revoke a key at once; its predictions and feedback stay."""
    with session.begin():
        revoke_client(session, client_id=client_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
