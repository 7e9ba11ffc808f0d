"""Who may see a console page, as FastAPI dependencies: the session's caller (spending the same
request budget as the key's API calls), the admin for the admin's pages, and the CSRF token every
form posts (each form's route checks it with `check_csrf` before acting)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Form, Request

from app.api.deps import StateDep
from app.console.session import console_caller
from app.core.errors import Forbidden
from app.services.clients import Caller, spend_request


async def get_console_caller(request: Request, state: StateDep) -> Caller:
    """The session's caller, within the same request rate as the key's API calls."""
    caller = await console_caller(state, request)
    spend_request(state, caller=caller)
    return caller


ConsoleCaller = Annotated[Caller, Depends(get_console_caller)]


async def get_console_admin(caller: ConsoleCaller) -> Caller:
    """The session's caller if it is the admin; any other caller gets the 403 page."""
    if not caller.is_admin:
        raise Forbidden("This page is the admin's; log in with the admin token.", field="session")
    return caller


ConsoleAdmin = Annotated[Caller, Depends(get_console_admin)]
Csrf = Annotated[str, Form(description="The form's CSRF token.")]
