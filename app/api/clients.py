"""API keys for client applications (admin)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request, Response, status

from app.api.deps import AdminDep, PageDep, RowId, StateDep, link_next
from app.api.schemas import (
    ClientCreate,
    ClientCreated,
    ClientOut,
    ClientRevoked,
    ClientUpdate,
)
from app.services.clients import create_client, list_clients, revoke_client, set_trusted

router = APIRouter(tags=["clients"])


@router.post("/v1/clients", status_code=status.HTTP_201_CREATED, response_model=ClientCreated)
def create(body: ClientCreate, _: AdminDep, state: StateDep) -> ClientCreated:
    """A key for the named tasks and scopes.  The key is in this answer only; the server keeps its hash."""
    client, key = create_client(state, name=body.name, tasks=body.tasks, scopes=body.scopes, trusted=body.trusted)
    return ClientCreated(key=key, **client)


@router.get("/v1/clients", response_model=list[ClientOut])
def list_all(_: AdminDep, state: StateDep, page: PageDep, request: Request, response: Response) -> list[ClientOut]:
    """Oldest first, a page at a time (`Link: rel="next"` while more follow)."""
    items, after = list_clients(state, page=page)
    link_next(request, response, after)
    return [ClientOut(**c) for c in items]


@router.patch("/v1/clients/{client_id}", response_model=ClientOut)
def update(client_id: RowId, body: ClientUpdate, _: AdminDep, state: StateDep) -> ClientOut:
    """Mark a key trusted (its feedback is known truth to the noise model, `GET /v1/tasks/{task}/noise`) or not."""
    return ClientOut(**set_trusted(state, client_id=client_id, trusted=body.trusted))


@router.delete("/v1/clients/{client_id}", response_model=ClientRevoked)
def revoke(client_id: RowId, _: AdminDep, state: StateDep,
           purge: bool = Query(False, description="Also delete the key's feedback, so no future training "
                                                  "run or gate uses it.")) -> ClientRevoked:
    """Revoke a key at once.  Its predictions stay; its feedback stays unless `purge=true`."""
    return ClientRevoked(**revoke_client(state, client_id=client_id, purge=purge))
