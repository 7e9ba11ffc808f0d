"""API keys for client applications (admin)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from app.api.deps import AdminDep, RowId, StateDep
from app.api.schemas import ClientCreate, ClientCreated, ClientOut
from app.services.clients import create_client, list_clients, revoke_client

router = APIRouter(tags=["clients"])


@router.post("/v1/clients", status_code=status.HTTP_201_CREATED, response_model=ClientCreated)
def create(body: ClientCreate, _: AdminDep, state: StateDep) -> ClientCreated:
    """The key is in this answer only; the server keeps its hash."""
    client, key = create_client(state.sessions, name=body.name)
    return ClientCreated(key=key, **ClientOut.model_validate(client, from_attributes=True).model_dump())


@router.get("/v1/clients", response_model=list[ClientOut])
def list_all(_: AdminDep, state: StateDep) -> list[ClientOut]:
    return [ClientOut.model_validate(c, from_attributes=True) for c in list_clients(state.sessions)]


@router.delete("/v1/clients/{client_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke(client_id: RowId, _: AdminDep, state: StateDep) -> Response:
    """Revoke a key at once; its predictions and feedback stay."""
    revoke_client(state.sessions, client_id=client_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
