"""Who is looking at the console, and CSRF protection of its forms.

Logging in with the admin token or a client key sets a signed session cookie (`HttpOnly`,
`SameSite=Strict`, path /ui, `Secure` when the browser came over HTTPS, directly or through a
trusted proxy's `X-Forwarded-Proto`) naming the admin or the key's hash, never the key.  A
revoked key's session ends at its next page; an admin session names (a MAC of) the admin token
it was made with, so rotating the token ends it.  With no admin token configured (development
mode, loopback only) every page acts as the admin, as the API does.

Every form carries a token derived from a random per-browser cookie and the session cookie
(keyed by the deployment's secret), checked before any form is acted on: a token is worthless
in another browser or another session.  SameSite=Strict already keeps other sites' forms from
carrying the cookies.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from fastapi import Request, Response

from app.core.errors import Forbidden
from app.core.security import derive_key, hash_api_key, mac, same_secret, sign, unsign
from app.services.clients import ADMIN, Caller, caller_for_key_hash
from app.process.state import AppState

SESSION_COOKIE = "flywheel_session"
CSRF_COOKIE = "flywheel_csrf"
SESSION_MAX_AGE_S = 12 * 3600
COOKIE_PATH = "/ui"


class LoginRequired(Exception):
    """No (valid) session: the console answers with the login page, then comes back to `next`."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def _key(state: AppState, purpose: str) -> bytes:
    return derive_key(state.settings.resolved_user_hash_key, purpose)


def _set_cookie(request: Request, response: Response, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(name, value, max_age=max_age, path=COOKIE_PATH, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


def _admin_token_mac(state: AppState) -> str:
    """Which admin token an admin session was made with, without the token itself."""
    return mac(_key(state, "console-admin"), state.settings.admin_token or "")


def start_session(state: AppState, request: Request, response: Response, caller: Caller, token: str) -> None:
    """Remember who logged in: the admin (with the admin token's MAC), or the client by its key's hash."""
    who = f"admin:{_admin_token_mac(state)}" if caller.is_admin else f"client:{hash_api_key(token)}"
    # a random id too, so two logins are two sessions (each with its own CSRF tokens)
    value = sign(_key(state, "console-session"),
                 f"{who}|{secrets.token_urlsafe(16)}|{int(time.time()) + SESSION_MAX_AGE_S}")
    _set_cookie(request, response, SESSION_COOKIE, value, SESSION_MAX_AGE_S)


def end_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)


def dev_mode(state: AppState) -> bool:
    return state.settings.admin_token is None


async def console_caller(state: AppState, request: Request) -> Caller:
    """The session's caller; LoginRequired when there is none, it expired, its key was revoked, or
    the admin token changed since it was made."""
    if dev_mode(state):
        return ADMIN
    raw = request.cookies.get(SESSION_COOKIE)
    value = unsign(_key(state, "console-session"), raw) if raw else None
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    parts = value.split("|") if value is not None else []  # who | session id | expires at
    if len(parts) != 3 or not parts[2].isdigit() or int(parts[2]) < time.time():
        raise LoginRequired(here)
    kind, _, ident = parts[0].partition(":")
    if kind == "admin":
        if not same_secret(ident, _admin_token_mac(state)):
            raise LoginRequired(here)
        return ADMIN
    if kind != "client":
        raise LoginRequired(here)
    caller = await caller_for_key_hash(state, key_hash=ident)
    if caller is None:
        raise LoginRequired(here)
    return caller


@dataclass(frozen=True)
class Csrf:
    """The browser's CSRF cookie (new when it had none) and the token its forms carry."""

    cookie: str
    token: str
    new: bool


def csrf_for(state: AppState, request: Request) -> Csrf:
    """This browser's CSRF cookie and the token its forms carry: a MAC of that cookie and of the
    session cookie it came with (none before login), so a token does not outlive its session
    nor work in another one."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    new = not cookie
    if new:
        cookie = secrets.token_urlsafe(32)
    session = request.cookies.get(SESSION_COOKIE, "")
    return Csrf(cookie, mac(_key(state, "console-csrf"), f"{cookie}\n{session}"), new)  # no cookie holds \n


def remember_csrf(request: Request, response: Response, csrf: Csrf) -> None:
    if csrf.new:
        _set_cookie(request, response, CSRF_COOKIE, csrf.cookie, None)


def check_csrf(state: AppState, request: Request, token: str | None) -> None:
    """Forbidden unless the form's token matches this browser's CSRF cookie and session."""
    cookie = request.cookies.get(CSRF_COOKIE)
    if not cookie or not token or not same_secret(token, csrf_for(state, request).token):
        raise Forbidden("This form's security token is missing or out of date; reload the page and try again.",
                        field="csrf", slug="csrf", title="Form expired")
