"""DELETE /v1/users/{user_id}: erase one end user's predictions and feedback (admin)."""

from __future__ import annotations

from fastapi import APIRouter, Query

from app.api.deps import AdminDep, StateDep
from app.services.users import erase_user as erase

router = APIRouter(tags=["privacy"])


@router.delete("/v1/users/{user_id:path}")
async def erase_user(user_id: str, _: AdminDep, state: StateDep,
                     client_id: int | None = Query(None, ge=0, le=2**63 - 1,
                                                   description="Whose user: the client that sent this user_id. "
                                                               "Omitted: a user of calls made with the admin "
                                                               "token.")) -> dict[str, int]:
    """Erase one client's end user: their predictions, their feedback, and feedback on their
    predictions.  Another client's user with the same id is a different person and stays."""
    return await erase(state, user_id=user_id, client_id=client_id)
