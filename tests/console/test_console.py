"""The console over HTTP (a real client, a real database, a real tiny model): login with a
session cookie, CSRF-protected forms, the pages a person uses, and what a client key may see.
The same flows in a real browser are in test_console_browser.py."""

from __future__ import annotations

import re

import pytest

from app.db.tables import ModelVersion, Task, TrainingRun
from app.db.versions import activate, register_version
from app.core.statuses import RunStatus
from support import ADMIN_TOKEN, make_settings
from support.api import predict
from support.console import csrf_of, log_in, problem_of

EXTERNAL = re.compile(r'''(?:src|href|action)\s*=\s*["'](?:https?:)?//''', re.I)


def test_pages_need_a_session_and_the_login_sets_a_strict_httponly_cookie(browser) -> None:
    r = browser.get("/ui/tasks/tickets/review", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/login?next=/ui/tasks/tickets/review"
    assert browser.get("/", follow_redirects=False).headers["location"] == "/ui"
    csrf = csrf_of(browser.get("/ui/login").text)
    bad = browser.post("/ui/login", data={"csrf": csrf, "token": "wrong", "next": "/ui"})
    assert bad.status_code == 401 and "Unknown or revoked" in bad.text
    r = browser.post("/ui/login", data={"csrf": csrf, "token": ADMIN_TOKEN, "next": "https://evil.example/"},
                     follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui"  # never redirected off this server
    cookie = r.headers["set-cookie"]
    assert "flywheel_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert ADMIN_TOKEN not in cookie
    assert browser.get("/ui").status_code == 200


def test_a_forged_session_cookie_is_not_a_session(browser) -> None:
    log_in(browser)
    value = browser.cookies.get("flywheel_session")
    browser.cookies.clear()
    browser.cookies.set("flywheel_session", value.replace("admin", "admix"))
    assert browser.get("/ui", follow_redirects=False).status_code == 303


def test_forms_without_the_csrf_token_change_nothing(browser) -> None:
    log_in(browser)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert browser.post("/v1/tasks", json={"name": "tickets", "labels": ["a", "b"]}, headers=admin).status_code == 201
    r = browser.post("/ui/clients", data={"name": "sneaky", "scopes": ["read"]})
    assert r.status_code == 403 and "security token" in problem_of(r.text)
    r = browser.post("/ui/clients", data={"name": "sneaky", "csrf": "0" * 64})
    assert r.status_code == 403
    assert browser.get("/v1/clients", headers=admin).json() == []


def test_every_page_loads_only_from_this_server(browser) -> None:
    csrf = log_in(browser)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert browser.post("/v1/tasks", json={"name": "tickets", "labels": ["billing", "weather"]},
                        headers=admin).status_code == 201
    predict(browser, texts=["my bill", "rain today"], headers=admin)
    pages = ["/ui", "/ui/tasks/tickets", "/ui/tasks/tickets/runs", "/ui/tasks/tickets/review",
             "/ui/tasks/tickets/try", "/ui/clients", "/ui/login"]
    for path in pages:
        r = browser.get(path)
        assert r.status_code == 200, (path, r.text)
        assert not EXTERNAL.search(r.text), (path, EXTERNAL.search(r.text))
        assert "default-src 'self'" in r.headers["content-security-policy"]
    r = browser.post("/ui/tasks/tickets/try", data={"csrf": csrf, "text": "my bill is wrong"})
    assert r.status_code == 200 and 'class="explained"' in r.text and not EXTERNAL.search(r.text)
    for asset in ("console.css", "console.js", "favicon.svg"):
        assert browser.get(f"/ui/static/{asset}").status_code == 200


def test_a_label_given_in_review_is_stored_as_feedback_through_the_api_code(browser) -> None:
    csrf = log_in(browser)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    browser.post("/v1/tasks", json={"name": "tickets", "labels": ["billing", "weather"]}, headers=admin)
    shown = predict(browser, texts=["my bill", "rain today"], headers=admin)["predictions"]
    page = browser.get("/ui/tasks/tickets/review").text
    assert re.search(r'id="corrections">0<', page)
    first = shown[0]
    other = "weather" if first["label"] == "billing" else "billing"
    r = browser.post("/ui/tasks/tickets/review", data={"csrf": csrf, "prediction_id": first["id"], "answer": other})
    assert r.status_code == 200 and re.search(r'id="corrections">1<', r.text)
    assert first["id"] not in re.findall(r'name="prediction_id" value="([^"]+)"', r.text)  # it has its label now
    # the model's own answer is a +1, not a correction
    second = shown[1]
    browser.post("/ui/tasks/tickets/review", data={"csrf": csrf, "prediction_id": second["id"],
                                                   "answer": second["label"]})
    counts = browser.get("/v1/tasks/tickets", headers=admin).json()["counts"]["feedback"]
    assert counts == {"positive": 1, "negative": 1, "corrections": 1, "total": 2}
    r = browser.post("/ui/tasks/tickets/review", data={"csrf": csrf, "prediction_id": second["id"],
                                                       "answer": "not-a-label"})
    assert r.status_code == 422 and "not a label" in problem_of(r.text)
    assert browser.get("/v1/tasks/tickets", headers=admin).json()["counts"]["feedback"]["total"] == 2


def test_rolling_back_in_the_console_activates_the_older_version(browser) -> None:
    csrf = log_in(browser)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    browser.post("/v1/tasks", json={"name": "tickets", "labels": ["billing", "weather"]}, headers=admin)
    sessions = browser.app.state.flywheel.sessions
    with sessions.begin() as s:
        task = s.query(Task).filter_by(name="tickets").one()
        v0 = s.query(ModelVersion).filter_by(task_id=task.id, version=0).one()
        v1 = register_version(s, task=task, path=v0.path, sha256=v0.sha256, version=1, parent_id=v0.id)
        activate(s, version=v1)
    page = browser.get("/ui/tasks/tickets").text
    assert re.search(r'id="active-version">v1<', page) and "Roll back to v0" in page and "v0 → v1" in page
    r = browser.post("/ui/tasks/tickets/versions/0/activate", data={"csrf": csrf})
    assert r.status_code == 200 and re.search(r'id="active-version">v0<', r.text)
    assert browser.get("/v1/tasks/tickets", headers=admin).json()["active_version"]["version"] == 0


def test_a_client_key_sees_only_its_tasks_and_not_the_admin_pages(browser) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for name in ("tickets", "other"):
        browser.post("/v1/tasks", json={"name": name, "labels": ["billing", "weather"]}, headers=admin)
    made = browser.post("/v1/clients", json={"name": "team-a", "tasks": ["tickets"]}, headers=admin).json()
    log_in(browser, made["key"])
    overview = browser.get("/ui").text
    assert 'data-task="tickets"' in overview and 'data-task="other"' not in overview
    assert browser.get("/ui/tasks/other/review").status_code == 404
    assert browser.get("/ui/tasks/tickets/review").status_code == 200
    for path in ("/ui/clients", "/ui/tasks/tickets", "/ui/tasks/tickets/runs"):
        assert browser.get(path).status_code == 403, path
    browser.delete(f"/v1/clients/{made['id']}", headers=admin)
    assert browser.get("/ui", follow_redirects=False).status_code == 303  # a revoked key's session ends


def test_a_client_keys_console_session_spends_the_keys_request_rate(tmp_path, db_url, tiny_model_dir) -> None:
    """A console session is no way around the key's limits: its pages and its Try it (a
    prediction and an explanation) spend the same budgets as the key's API calls."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    settings = make_settings(tmp_path / "data", db_url, tiny_model_dir, rate_limit_burst=6, rate_limit_per_s=0.001)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with TestClient(create_app(settings)) as browser:
        browser.post("/v1/tasks", json={"name": "tickets", "labels": ["billing", "weather"]}, headers=admin)
        made = browser.post("/v1/clients", json={"name": "team-a", "tasks": ["tickets"]}, headers=admin).json()
        csrf = log_in(browser, made["key"])  # the login spends one
        codes = [browser.get("/ui").status_code for _ in range(4)]
        tried = browser.post("/ui/tasks/tickets/try", data={"csrf": csrf, "text": "my card is gone"})
        assert codes == [200] * 4 and tried.status_code == 200
        assert browser.get("/ui").status_code == 429
        r = browser.get("/v1/tasks/tickets", headers={"Authorization": f"Bearer {made['key']}"})
        assert r.status_code == 429  # one budget for the key, wherever it is spent


def test_creating_a_key_shows_it_once_and_revoking_it_works(browser) -> None:
    csrf = log_in(browser)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    browser.post("/v1/tasks", json={"name": "tickets", "labels": ["billing", "weather"]}, headers=admin)
    r = browser.post("/ui/clients", data={"csrf": csrf, "name": "team-b", "tasks": ["tickets"],
                                          "scopes": ["predict", "read"]})
    assert r.status_code == 201
    key = re.search(r'id="new-key"[^>]*>([^<]+)<', r.text).group(1)
    assert browser.get("/v1/tasks/tickets", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    listed = browser.get("/ui/clients").text
    assert key not in listed and key[:10] in listed
    [client] = browser.get("/v1/clients", headers=admin).json()
    assert client["scopes"] == ["predict", "read"] and client["tasks"] == ["tickets"]
    browser.post(f"/ui/clients/{client['id']}/revoke", data={"csrf": csrf})
    assert browser.get("/v1/tasks/tickets", headers={"Authorization": f"Bearer {key}"}).status_code == 401


def test_development_mode_needs_no_login(tmp_path, sqlite_url, tiny_model_dir) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app

    settings = make_settings(tmp_path / "data", sqlite_url, tiny_model_dir, admin_token=None)
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8000", client=("127.0.0.1", 50000)) as c:
        r = c.get("/ui")
        assert r.status_code == 200 and "development mode" in r.text and "Log out" not in r.text
        # and, as for the API, a page on another site cannot drive it
        csrf = csrf_of(c.get("/ui/clients").text)
        r = c.post("/ui/clients", data={"csrf": csrf, "name": "x"}, headers={"Sec-Fetch-Site": "cross-site"})
        assert r.status_code == 403


def test_a_task_and_its_examples_are_made_without_curl(browser) -> None:
    csrf = log_in(browser)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    r = browser.post("/ui/tasks", data={"csrf": csrf, "name": "tickets", "kind": "classification",
                                        "labels": "billing, card_lost\nweather"})
    assert r.status_code == 200 and r.url.path == "/ui/tasks/tickets/try"
    task = browser.get("/v1/tasks/tickets", headers=admin).json()
    assert task["labels"] == ["billing", "card_lost", "weather"] and task["active_version"]["version"] == 0
    r = browser.post("/ui/tasks", data={"csrf": csrf, "name": "reviews", "kind": "rating", "low": "-4", "high": "4"})
    assert r.status_code == 200
    assert browser.get("/v1/tasks/reviews", headers=admin).json()["range"] == [-4.0, 4.0]
    r = browser.post("/ui/tasks", data={"csrf": csrf, "name": "Bad Name", "kind": "classification", "labels": "a,b"})
    assert r.status_code == 422 and "name" in problem_of(r.text)
    r = browser.post("/ui/tasks", data={"csrf": csrf, "name": "tickets", "kind": "classification", "labels": "a,b"})
    assert r.status_code == 409

    csv = "text,label\nwhy was I charged twice,billing\nI lost my card,card_lost\nwill it rain,weather\n"
    r = browser.post("/ui/tasks/tickets/examples", data={"csrf": csrf, "csv": csv})
    assert r.status_code == 200 and "Imported 3 examples" in r.text
    r = browser.post("/ui/tasks/tickets/examples", data={"csrf": csrf, "csv": "text,label\nok,billing\nbad,nope\n"})
    assert r.status_code == 422 and "nope" in problem_of(r.text)
    assert browser.get("/v1/tasks/tickets", headers=admin).json()["counts"]["examples"]["total"] == 3


def test_review_and_try_work_for_ratings_and_tagging(browser) -> None:
    csrf = log_in(browser)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    browser.post("/v1/tasks", json={"name": "reviews", "kind": "rating", "range": [-4, 4]}, headers=admin)
    browser.post("/v1/tasks", json={"name": "ner", "kind": "tagging", "labels": ["person", "place"]}, headers=admin)
    [rated] = predict(browser, task="reviews", texts=["what a lovely film"], headers=admin)["predictions"]
    [tagged] = predict(browser, task="ner", texts=["Ann went to Paris"], headers=admin)["predictions"]
    for task in ("reviews", "ner"):
        assert browser.get(f"/ui/tasks/{task}/review").status_code == 200
        r = browser.post(f"/ui/tasks/{task}/try", data={"csrf": csrf, "text": "Ann loved Paris"})
        assert r.status_code == 200 and "No explanation: Explanations are for classification tasks" in r.text
    far = "-3.5" if rated["score"] > 0 else "3.5"  # far from what the model said: a correction, not a +1
    r = browser.post("/ui/tasks/reviews/review", data={"csrf": csrf, "prediction_id": rated["id"], "answer": far})
    assert r.status_code == 200
    spans = '[{"start": 0, "end": 3, "label": "person"}, {"start": 12, "end": 17, "label": "place"}]'
    assert browser.post("/ui/tasks/ner/review", data={"csrf": csrf, "prediction_id": tagged["id"],
                                                      "answer": spans}).status_code == 200
    r = browser.post("/ui/tasks/ner/review", data={"csrf": csrf, "prediction_id": tagged["id"], "answer": "[{"})
    assert r.status_code == 422 and "JSON" in problem_of(r.text)
    for task in ("reviews", "ner"):
        assert browser.get(f"/v1/tasks/{task}", headers=admin).json()["counts"]["feedback"]["corrections"] == 1


def test_rotating_the_admin_token_ends_the_admin_sessions_made_with_it(tmp_path, db_url, tiny_model_dir) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app

    def served_with(token: str) -> TestClient:  # the same deployment (database, data, secret), restarted
        return TestClient(create_app(make_settings(tmp_path / "data", db_url, tiny_model_dir, admin_token=token)))

    with served_with(ADMIN_TOKEN) as before:
        log_in(before)
        browser_cookies = list(before.cookies.jar)  # what the browser keeps across the restart
        assert before.get("/ui/clients", follow_redirects=False).status_code == 200
    rotated = "rotated-admin-token-0123456789abcdef"
    with served_with(rotated) as after:
        for cookie in browser_cookies:
            after.cookies.jar.set_cookie(cookie)
        r = after.get("/ui/clients", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/ui/login?next=/ui/clients"
        log_in(after, rotated)
        assert after.get("/ui/clients", follow_redirects=False).status_code == 200
    with served_with(ADMIN_TOKEN) as restarted:  # a restart with the same token keeps its sessions
        for cookie in browser_cookies:
            restarted.cookies.jar.set_cookie(cookie)
        assert restarted.get("/ui/clients", follow_redirects=False).status_code == 200


def test_a_csrf_token_is_good_only_in_the_session_it_was_given_in(browser) -> None:
    """A form token taken from one session (here the attacker's own client-key session, with a
    CSRF cookie planted in the victim's browser) is refused in another: the admin's."""
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    browser.post("/v1/tasks", json={"name": "tickets", "labels": ["billing", "weather"]}, headers=admin)
    key = browser.post("/v1/clients", json={"name": "attacker", "tasks": ["tickets"]}, headers=admin).json()["key"]
    theirs = log_in(browser, key)
    ours = log_in(browser)  # the same browser, so the same CSRF cookie
    assert theirs != ours
    r = browser.post("/ui/clients", data={"csrf": theirs, "name": "planted"})
    assert r.status_code == 403 and "security token" in problem_of(r.text)
    assert browser.post("/ui/clients", data={"csrf": ours, "name": "wanted"}).status_code == 201
    assert [c["name"] for c in browser.get("/v1/clients", headers=admin).json()] == ["attacker", "wanted"]
    browser.post("/ui/logout", data={"csrf": ours})
    log_in(browser)
    assert browser.post("/ui/clients", data={"csrf": ours, "name": "stale"}).status_code == 403


@pytest.mark.parametrize("peer, secure", [("10.0.0.5", True), ("10.0.0.9", False)])
def test_the_session_cookie_is_secure_behind_a_trusted_tls_proxy(tmp_path, sqlite_url, tiny_model_dir,
                                                                 peer: str, secure: bool) -> None:
    """A TLS-terminating proxy named in FLYWHEEL_FORWARDED_ALLOW_IPS says `X-Forwarded-Proto:
    https`: the session cookie is `Secure`.  The same header from anyone else is not believed."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    settings = make_settings(tmp_path / "data", sqlite_url, tiny_model_dir, forwarded_allow_ips="10.0.0.5")
    with TestClient(create_app(settings), client=(peer, 40000)) as c:
        csrf = csrf_of(c.get("/ui/login").text)
        r = c.post("/ui/login", data={"csrf": csrf, "token": ADMIN_TOKEN, "next": "/ui"},
                   headers={"X-Forwarded-Proto": "https"}, follow_redirects=False)
        assert r.status_code == 303
        cookie = r.headers["set-cookie"]
        assert cookie.startswith("flywheel_session=") and ("; secure" in cookie.lower()) is secure, cookie


def test_the_runs_page_says_what_a_second_look_decided(browser) -> None:
    log_in(browser)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    browser.post("/v1/tasks", json={"name": "tickets", "labels": ["billing", "weather"]}, headers=admin)
    with browser.app.state.flywheel.sessions.begin() as s:
        task = s.query(Task).filter_by(name="tickets").one()
        s.add(TrainingRun(task_id=task.id, status=RunStatus.REJECTED, gate={
            "verdict": "inconclusive", "reason": "cannot tell yet",
            "second_look": {"version": 1, "look": 2, "decision": "promote", "reason": "not worse",
                            "confidence": 0.975, "comparison": {"rows": 597}}}))
    page = browser.get("/ui/tasks/tickets/runs").text
    assert re.search(r"second look \(look 2\) at v1: <strong>promote</strong> on 597 rows", page)
