"""GET /v1/tasks/{task}/noise and marking a key trusted (PATCH /v1/clients/{id}): each key's flip
rate with its interval and evidence; the admin sees every key, a key only itself."""

from __future__ import annotations

from support.api import assert_problem, create_task, predict


def _key(client, name: str, **extra) -> tuple[dict[str, str], int]:
    r = client.post("/v1/clients", json={"name": name, "tasks": ["tickets"], **extra})
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['key']}"}, r.json()["id"]


def _vote(client, headers: dict[str, str], texts: list[str], *, right: bool) -> list[str]:
    """Predict `texts` with the key and say +1 (right) or −1 on each; the labels shown."""
    shown = []
    for p in predict(client, "tickets", headers=headers, texts=texts)["predictions"]:
        signal = 1 if right else -1
        r = client.post(f"/v1/predictions/{p['id']}/feedback", json={"signal": signal}, headers=headers)
        assert r.status_code == 201, r.text
        shown.append(p["label"])
    return shown


def _world(client) -> dict:
    """`liar` says −1 to answers labelled right, `honest` +1; both also vote on texts that `qa` says +1 to."""
    create_task(client, "tickets")
    liar, liar_id = _key(client, "liar")
    honest, honest_id = _key(client, "honest")
    qa, qa_id = _key(client, "qa")
    labelled = [f"labelled text {i}" for i in range(8)]
    shown = _vote(client, liar, labelled[:4], right=False) + _vote(client, honest, labelled[4:], right=True)
    r = client.post("/v1/tasks/tickets/examples",
                    json={"examples": [{"text": t, "label": lab} for t, lab in zip(labelled, shown)]})
    assert r.status_code in (200, 201), r.text
    checked = [f"checked text {i}" for i in range(5)]
    _vote(client, qa, checked, right=True)
    _vote(client, liar, checked, right=False)
    return {"liar": (liar, liar_id), "honest": (honest, honest_id), "qa": (qa, qa_id)}


def test_the_admin_sees_every_keys_flip_rate_interval_and_evidence(client) -> None:
    keys = _world(client)
    r = client.get("/v1/tasks/tickets/noise")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["task"] == "tickets"
    assert set(body["pooled"]) == {"rate", "low", "high", "evidence", "trusted", "adversarial", "careless"}
    rows = {c["name"]: c for c in body["clients"]}
    assert set(rows) == {"liar", "honest", "qa"}
    liar, honest = rows["liar"], rows["honest"]
    assert liar["client_id"] == keys["liar"][1]
    assert liar["evidence"]["known"] == 4 and liar["evidence"]["peers"] == 5  # qa is one more key, not trusted yet
    assert honest["evidence"] == {"known": 4, "anchors": 0, "peers": 0}
    assert liar["rate"] > body["pooled"]["rate"] > honest["rate"]
    for row in rows.values():
        assert 0.0 <= row["low"] <= row["rate"] <= row["high"] <= 1.0
        assert row["trusted"] is False


def test_a_key_sees_only_its_own_row_and_needs_read(client) -> None:
    keys = _world(client)
    mine = client.get("/v1/tasks/tickets/noise", headers=keys["honest"][0])
    assert mine.status_code == 200, mine.text
    assert [c["name"] for c in mine.json()["clients"]] == ["honest"]
    blind, _ = _key(client, "blind", scopes=["predict", "feedback"])
    assert_problem(client.get("/v1/tasks/tickets/noise", headers=blind), 403, "missing-scope", "Authorization")
    assert_problem(client.get("/v1/tasks/nosuch/noise", headers=keys["honest"][0]), 404, "unknown-task", "task")
    assert_problem(client.get("/v1/tasks/nosuch/noise"), 404, "unknown-task", "task")


def test_a_key_marked_trusted_is_known_truth_for_the_others(client) -> None:
    keys = _world(client)
    qa_id = keys["qa"][1]
    r = client.patch(f"/v1/clients/{qa_id}", json={"trusted": True})
    assert r.status_code == 200, r.text
    assert r.json()["trusted"] is True and r.json()["name"] == "qa"
    assert {c["name"]: c["trusted"] for c in client.get("/v1/clients").json()} == {
        "liar": False, "honest": False, "qa": True}
    rows = {c["name"]: c for c in client.get("/v1/tasks/tickets/noise").json()["clients"]}
    assert rows["qa"]["trusted"] is True
    assert rows["liar"]["evidence"] == {"known": 9, "anchors": 0, "peers": 0}
    assert rows["liar"]["adversarial"] is True
    assert client.patch(f"/v1/clients/{qa_id}", json={"trusted": False}).json()["trusted"] is False


def test_a_key_can_be_created_trusted(client) -> None:
    create_task(client, "tickets")
    r = client.post("/v1/clients", json={"name": "qa", "tasks": ["tickets"], "trusted": True})
    assert r.status_code == 201 and r.json()["trusted"] is True
    assert client.post("/v1/clients", json={"name": "app", "tasks": ["tickets"]}).json()["trusted"] is False


def test_marking_trusted_refuses_an_unknown_key_a_bad_body_and_a_client_key(client) -> None:
    create_task(client, "tickets")
    key, key_id = _key(client, "app")
    assert_problem(client.patch("/v1/clients/999", json={"trusted": True}), 404, "unknown-client", "client_id")
    assert client.patch(f"/v1/clients/{key_id}", json={"trusted": "very"}).status_code == 422
    assert client.patch(f"/v1/clients/{key_id}", json={}).status_code == 422
    assert client.patch(f"/v1/clients/{key_id}", json={"trusted": True, "name": "x"}).status_code == 422
    assert_problem(client.patch(f"/v1/clients/{key_id}", json={"trusted": True}, headers=key),
                   403, "forbidden", "Authorization")
    assert client.get("/v1/clients").json()[0]["trusted"] is False
