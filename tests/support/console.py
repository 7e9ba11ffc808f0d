"""Helpers the console tests share: a person logs in through the form, and the CSRF token and
problem text a page carries."""

from __future__ import annotations

import re

from support import ADMIN_TOKEN


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def problem_of(html: str) -> str:
    return re.search(r'id="problem">([^<]+)', html).group(1)


def log_in(browser, token: str = ADMIN_TOKEN) -> str:
    """Log in through the form; the CSRF token the pages' forms carry in that session."""
    csrf = csrf_of(browser.get("/ui/login").text)
    r = browser.post("/ui/login", data={"csrf": csrf, "token": token, "next": "/ui"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return csrf_of(browser.get("/ui/login").text)
