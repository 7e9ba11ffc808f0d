"""The console shows each key's feedback noise on a task's versions page, and marks a key trusted
with a CSRF-protected form on the clients page."""

from __future__ import annotations

import re

from support import ADMIN_TOKEN
from support.api import predict
from support.console import log_in

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _keyed(browser, name: str) -> tuple[dict[str, str], int]:
    r = browser.post("/v1/clients", json={"name": name, "tasks": ["tickets"]}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['key']}"}, r.json()["id"]


def test_the_versions_page_shows_feedback_noise_by_client(browser) -> None:
    log_in(browser)
    browser.post("/v1/tasks", json={"name": "tickets", "labels": ["billing", "weather"]}, headers=ADMIN)
    key, key_id = _keyed(browser, "team-noisy")
    texts = [f"text {i}" for i in range(4)]
    answers = predict(browser, "tickets", headers=key, texts=texts)["predictions"]
    for p in answers:
        assert browser.post(f"/v1/predictions/{p['id']}/feedback", json={"signal": -1}, headers=key).status_code == 201
    examples = [{"text": t, "label": p["label"]} for t, p in zip(texts, answers)]
    assert browser.post("/v1/tasks/tickets/examples", json={"examples": examples}, headers=ADMIN).status_code < 300
    page = browser.get("/ui/tasks/tickets")
    assert page.status_code == 200
    assert "Feedback noise by client" in page.text
    row = re.search(rf'<tr data-noise-client="{key_id}">(.*?)</tr>', page.text, re.DOTALL).group(1)
    assert "team-noisy" in row and "4 known, 0 anchors, 0 peers" in row


def test_the_clients_page_marks_a_key_trusted_and_needs_the_csrf_token(browser) -> None:
    csrf = log_in(browser)
    browser.post("/v1/tasks", json={"name": "tickets", "labels": ["billing", "weather"]}, headers=ADMIN)
    _, key_id = _keyed(browser, "qa-team")
    page = browser.get("/ui/clients").text
    assert f'action="/ui/clients/{key_id}/trust"' in page and "Mark trusted" in page
    forged = browser.post(f"/ui/clients/{key_id}/trust", data={"csrf": "forged", "trusted": "true"},
                          follow_redirects=False)
    assert forged.status_code == 403
    assert browser.get("/v1/clients", headers=ADMIN).json()[0]["trusted"] is False
    r = browser.post(f"/ui/clients/{key_id}/trust", data={"csrf": csrf, "trusted": "true"}, follow_redirects=False)
    assert r.status_code == 303
    assert browser.get("/v1/clients", headers=ADMIN).json()[0]["trusted"] is True
    assert "Stop trusting" in browser.get("/ui/clients").text
    browser.post(f"/ui/clients/{key_id}/trust", data={"csrf": csrf, "trusted": "false"})
    assert browser.get("/v1/clients", headers=ADMIN).json()[0]["trusted"] is False
