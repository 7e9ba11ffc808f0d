"""POST /v1/predictions/{id}/feedback (who may give it, what is stored, what is refused) and
DELETE /v1/users/{user_id} (erasure of one end user's predictions and feedback)."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from sqlalchemy import inspect

from app.db.tables import Feedback, Prediction
from support.api import LABELS, assert_problem, predict, rows, table_counts


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keys(client, task) -> dict[str, dict]:
    """Two client applications, each with its own key."""
    out = {}
    for name in ("alpha", "beta"):
        r = client.post("/v1/clients", json={"name": name, "tasks": ["tickets"]})
        assert r.status_code == 201
        out[name] = r.json()
    return out


def _one(client, text: str = "I lost my card", headers: dict | None = None, **extra) -> dict:
    return predict(client, text=text, headers=headers, **extra)["predictions"][0]


def _feedback(client, pid: str, headers: dict | None = None, **body):
    return client.post(f"/v1/predictions/{pid}/feedback", json=body, headers=headers)


# ---------------------------------------------------------------- what is stored


def test_positive_feedback_is_stored_with_its_prediction(client, task, keys) -> None:
    alpha = _bearer(keys["alpha"]["key"])
    p = _one(client, headers=alpha)
    r = _feedback(client, p["id"], headers=alpha, signal=1)
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["prediction_id"] == p["id"] and out["signal"] == 1 and out["correction"] is None
    assert out["created_at"]
    [row] = rows(client, Feedback)
    assert row.id == out["id"] and row.prediction_id == p["id"] and row.signal == 1
    assert row.client_id == keys["alpha"]["id"]
    assert row.task_id == rows(client, Prediction)[0].task_id


def test_negative_feedback_and_correction_are_counted(client, task) -> None:
    a, b, c = (p for p in predict(client, texts=["one", "two", "three"])["predictions"])
    wrong = next(lab for lab in LABELS if lab != c["label"])
    assert _feedback(client, a["id"], signal=1).status_code == 201
    assert _feedback(client, b["id"], signal=-1).status_code == 201
    r = _feedback(client, c["id"], signal=-1, correction=wrong)
    assert r.status_code == 201 and r.json()["correction"] == wrong
    assert client.get("/v1/tasks/tickets").json()["counts"]["feedback"] == {
        "positive": 1, "negative": 2, "corrections": 1, "total": 3}
    stored = {f.prediction_id: (f.signal, f.correction) for f in rows(client, Feedback)}
    assert stored == {a["id"]: (1, None), b["id"]: (-1, None), c["id"]: (-1, wrong)}


def test_positive_signal_may_repeat_the_shown_label_as_correction(client, task) -> None:
    p = _one(client)
    r = _feedback(client, p["id"], signal=1, correction=p["label"])
    assert r.status_code == 201 and r.json()["correction"] == p["label"]


def test_several_signals_on_one_prediction_are_all_kept(client, task) -> None:
    p = _one(client)
    assert _feedback(client, p["id"], signal=1).status_code == 201
    assert _feedback(client, p["id"], signal=-1).status_code == 201
    assert len(rows(client, Feedback)) == 2


# ---------------------------------------------------------------- whose predictions


def test_client_gives_feedback_only_on_its_own_predictions(client, task, keys) -> None:
    alpha, beta = _bearer(keys["alpha"]["key"]), _bearer(keys["beta"]["key"])
    theirs = _one(client, headers=alpha)
    before = table_counts(client)
    r = _feedback(client, theirs["id"], headers=beta, signal=1)
    assert_problem(r, 403, "not-your-prediction", "prediction_id", mentions=("client",))
    assert table_counts(client) == before
    assert _feedback(client, theirs["id"], headers=alpha, signal=1).status_code == 201


def test_client_cannot_give_feedback_on_admin_predictions(client, task, keys) -> None:
    admins = _one(client)
    r = _feedback(client, admins["id"], headers=_bearer(keys["alpha"]["key"]), signal=-1)
    assert_problem(r, 403, "not-your-prediction", "prediction_id")
    assert rows(client, Feedback) == []


def test_admin_may_give_feedback_on_any_prediction(client, task, keys) -> None:
    p = _one(client, headers=_bearer(keys["alpha"]["key"]))
    r = _feedback(client, p["id"], signal=-1)  # the client fixture sends the admin token
    assert r.status_code == 201
    [row] = rows(client, Feedback)
    assert row.client_id is None


# ---------------------------------------------------------------- refused


def test_signal_other_than_plus_or_minus_one_is_422(client, task) -> None:
    p = _one(client)
    before = table_counts(client)
    for signal in [0, 2, -2, "yes", "1x", None, 0.5, [1], False]:
        assert_problem(_feedback(client, p["id"], signal=signal), 422, "validation", "signal")
    assert table_counts(client) == before


def test_boolean_true_is_not_a_signal(client, task) -> None:
    """`true` is not +1: `false` is refused (it is neither 1 nor -1), so taking `true` as +1 is lopsided."""
    p = _one(client)
    assert_problem(_feedback(client, p["id"], signal=True), 422, "validation", "signal")
    assert rows(client, Feedback) == []


def test_missing_signal_is_422(client, task) -> None:
    p = _one(client)
    assert_problem(_feedback(client, p["id"], correction=LABELS[0]), 422, "validation", "signal",
                   mentions=("signal",))
    assert rows(client, Feedback) == []


def test_correction_with_unknown_label_is_422(client, task) -> None:
    p = _one(client)
    r = _feedback(client, p["id"], signal=-1, correction="groceries")
    assert_problem(r, 422, "unknown-label", "correction", mentions=("groceries",))
    assert rows(client, Feedback) == []


def test_correction_contradicting_a_positive_signal_is_422(client, task) -> None:
    p = _one(client)
    other = next(lab for lab in LABELS if lab != p["label"])
    r = _feedback(client, p["id"], signal=1, correction=other)
    assert_problem(r, 422, "contradictory-feedback", "correction", mentions=(p["label"], other))
    assert rows(client, Feedback) == []


def test_correction_repeating_the_label_called_wrong_is_422(client, task) -> None:
    """-1 says the shown label was wrong; a correction naming that same label says it was right."""
    p = _one(client)
    r = _feedback(client, p["id"], signal=-1, correction=p["label"])
    assert_problem(r, 422, "contradictory-feedback", "correction", mentions=(p["label"],))
    assert rows(client, Feedback) == []


def test_feedback_on_unknown_prediction_is_404(client, task) -> None:
    before = table_counts(client)
    r = _feedback(client, "0" * 32, signal=1)
    assert_problem(r, 404, "unknown-prediction", "prediction_id", mentions=("0" * 32,))
    assert table_counts(client) == before


def test_unknown_field_is_422(client, task) -> None:
    p = _one(client)
    assert_problem(_feedback(client, p["id"], signal=1, label="billing"), 422, "validation", "label")


def test_malformed_json_feedback_is_problem(client, task) -> None:
    p = _one(client)
    r = client.post(f"/v1/predictions/{p['id']}/feedback", content=b"{signal: 1}",
                    headers={"content-type": "application/json"})
    assert_problem(r, 422, "malformed-json", "body")
    assert rows(client, Feedback) == []


# ---------------------------------------------------------------- erasure of one end user


RAW_USER = "alice.7f3c@example.com"


def _raw_values(client) -> list[str]:
    """Every value of every column of the predictions and feedback tables, as text."""
    out = []
    for model in (Prediction, Feedback):
        cols = [c.key for c in inspect(model).column_attrs]
        for row in rows(client, model):
            out.extend(str(getattr(row, c)) for c in cols)
    return out


def test_user_ids_are_stored_only_as_keyed_hashes(client, task, settings) -> None:
    p = _one(client, user_id=RAW_USER)
    assert _feedback(client, p["id"], signal=1, user_id=RAW_USER).status_code == 201
    values = _raw_values(client)
    assert not any(RAW_USER in v or "alice" in v for v in values)
    keyed = hmac.new(settings.user_hash_key.encode(), f"admin\x00{RAW_USER}".encode(), hashlib.sha256).hexdigest()
    assert rows(client, Prediction)[0].user_hash == keyed == rows(client, Feedback)[0].user_hash
    assert keyed != hashlib.sha256(RAW_USER.encode()).hexdigest()  # keyed: not reversible by guessing ids


def test_erasing_a_user_deletes_their_predictions_and_feedback_only(client, task) -> None:
    alice = _one(client, "alice asks", user_id=RAW_USER)
    bob = _one(client, "bob asks", user_id="bob")
    anon = _one(client, "nobody asks")
    assert _feedback(client, alice["id"], signal=1, user_id=RAW_USER).status_code == 201
    assert _feedback(client, alice["id"], signal=-1, user_id="bob").status_code == 201  # on alice's prediction
    assert _feedback(client, bob["id"], signal=-1, user_id=RAW_USER).status_code == 201  # alice on bob's
    assert _feedback(client, bob["id"], signal=1, user_id="bob").status_code == 201
    assert _feedback(client, anon["id"], signal=1).status_code == 201

    r = client.delete(f"/v1/users/{RAW_USER}")
    assert r.status_code == 200, r.text
    assert r.json() == {"deleted_predictions": 1, "deleted_feedback": 3}
    assert {p.id for p in rows(client, Prediction)} == {bob["id"], anon["id"]}
    left = {(f.prediction_id, f.signal) for f in rows(client, Feedback)}
    assert left == {(bob["id"], 1), (anon["id"], 1)}

    again = client.delete(f"/v1/users/{RAW_USER}")
    assert again.status_code == 200 and again.json() == {"deleted_predictions": 0, "deleted_feedback": 0}
    assert client.get("/v1/tasks/tickets").json()["counts"]["predictions"] == 2


def test_erasing_a_user_needs_admin(client, task, keys) -> None:
    _one(client, user_id=RAW_USER)
    r = client.delete(f"/v1/users/{RAW_USER}", headers=_bearer(keys["alpha"]["key"]))
    assert_problem(r, 403, "forbidden", "Authorization")
    assert len(rows(client, Prediction)) == 1


@pytest.mark.parametrize("user_id", ["org/alice", "tenant/42/user/7", "a?b#c%d"])
def test_any_user_id_that_can_be_stored_can_be_erased(client, task, user_id: str) -> None:
    """predict takes any user_id up to 256 characters, so erasure must reach every one, '/' included."""
    from urllib.parse import quote

    p = _one(client, user_id=user_id)
    assert _feedback(client, p["id"], signal=1, user_id=user_id).status_code == 201
    r = client.delete(f"/v1/users/{quote(user_id, safe='')}")
    assert r.status_code == 200, r.text
    assert r.json() == {"deleted_predictions": 1, "deleted_feedback": 1}
    assert rows(client, Prediction) == [] and rows(client, Feedback) == []


def test_the_same_user_id_at_two_clients_is_two_people(client, task, keys) -> None:
    """Erasing team alpha's "alice" leaves team beta's "alice" (and the admin's) alone."""
    alpha, beta = _bearer(keys["alpha"]["key"]), _bearer(keys["beta"]["key"])
    pa = _one(client, "alpha's alice asks", headers=alpha, user_id=RAW_USER)
    pb = _one(client, "beta's alice asks", headers=beta, user_id=RAW_USER)
    admins = _one(client, "the admin's alice asks", user_id=RAW_USER)
    assert _feedback(client, pa["id"], headers=alpha, signal=1, user_id=RAW_USER).status_code == 201
    assert _feedback(client, pb["id"], headers=beta, signal=1, user_id=RAW_USER).status_code == 201
    hashes = {p.id: p.user_hash for p in rows(client, Prediction)}
    assert len(set(hashes.values())) == 3

    r = client.delete(f"/v1/users/{RAW_USER}", params={"client_id": keys["alpha"]["id"]})
    assert r.status_code == 200 and r.json() == {"deleted_predictions": 1, "deleted_feedback": 1}, r.text
    assert {p.id for p in rows(client, Prediction)} == {pb["id"], admins["id"]}
    assert [f.prediction_id for f in rows(client, Feedback)] == [pb["id"]]
    r = client.delete(f"/v1/users/{RAW_USER}")  # no client_id: the admin token's own users
    assert r.json() == {"deleted_predictions": 1, "deleted_feedback": 0}
    assert {p.id for p in rows(client, Prediction)} == {pb["id"]}


def test_erasing_for_a_client_that_does_not_exist_is_404(client, task) -> None:
    _one(client, user_id=RAW_USER)
    assert_problem(client.delete(f"/v1/users/{RAW_USER}", params={"client_id": 999}), 404, "unknown-client",
                   "client_id")
    assert len(rows(client, Prediction)) == 1


def test_rows_hashed_before_namespaces_are_still_erased_for_their_client(client, task, keys, settings) -> None:
    from sqlalchemy import update

    from app.core.security import hash_user_id

    alpha = _bearer(keys["alpha"]["key"])
    mine = _one(client, "stored by an older release", headers=alpha, user_id=RAW_USER)
    theirs = _one(client, "beta's, also old", headers=_bearer(keys["beta"]["key"]), user_id=RAW_USER)
    legacy = hash_user_id(RAW_USER, settings.user_hash_key.encode(), None)
    with client.app.state.flywheel.sessions.begin() as s:
        s.execute(update(Prediction).values(user_hash=legacy))
    r = client.delete(f"/v1/users/{RAW_USER}", params={"client_id": keys["alpha"]["id"]})
    assert r.json()["deleted_predictions"] == 1
    assert [p.id for p in rows(client, Prediction)] == [theirs["id"]] and mine["id"] != theirs["id"]
