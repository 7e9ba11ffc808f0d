"""DELETE /v1/users/{user_id}: erase one end user's predictions and feedback (admin)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import AdminDep, StateDep
from app.services.users import erase_user as erase

router = APIRouter(tags=["privacy"])


@router.delete("/v1/users/{user_id:path}")
def erase_user(user_id: str, _: AdminDep, state: StateDep) -> dict[str, int]:
    """Everything stored under this user's keyed hash goes, in one transaction."""
    return erase(state.sessions, user_id=user_id, key=state.settings.resolved_user_hash_key)
