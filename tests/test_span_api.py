"""Span models through the HTTP API: spans beside tags (character offsets for texts, token indices for
sentences), the service a span model is conditioned on, and dialog sessions that answer each turn's slots with
its act in one call."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from service.app import create_app
from service.sessions import SessionState
from training.tagger.spans import tags_to_spans

TAG = "/v1/models/slots:tag"


@pytest.fixture(scope="module")
def app(tmp_path_factory, random_tagger_dir, random_span_tagger_dir, random_dialog_dirs):
    models_dir = tmp_path_factory.mktemp("served-spans")
    shutil.copytree(random_tagger_dir, models_dir / "pos" / "1")
    shutil.copytree(random_span_tagger_dir, models_dir / "slots" / "1")
    shutil.copytree(random_dialog_dirs["dialog-act"], models_dir / "dialog-act" / "1")
    app = create_app({"models_dir": str(models_dir), "poll_interval_seconds": 0, "batch_timeout_ms": 1})
    yield app
    app.extensions["seqtag.registry"].close()


@pytest.fixture
def client(app):
    return app.test_client()


def test_texts_get_spans_with_character_offsets(client):
    text = "A table in San Jose at 7 pm. Play Hey Jude!"
    body = client.post(TAG, json={"texts": [text], "service": "Restaurants_1"}).get_json()
    result = body["results"][0]
    assert result["sentences"] == [[0, 9], [9, 13]]
    spans = tags_to_spans(result["tags"], "bio")  # the tags are well-formed, and the spans are theirs
    assert [s["label"] for s in result["spans"]] == [label for label, _, _ in spans]
    for span, (_, first, end) in zip(result["spans"], spans):
        assert [span["start"], span["end"]] == [result["offsets"][first][0], result["offsets"][end - 1][1]]
        assert span["text"] == text[span["start"]:span["end"]] and 0 < span["score"] <= 1


def test_sentences_get_spans_as_token_indices_and_the_service_matters(client):
    sentence = ["A", "table", "in", "San", "Jose", "at", "7", "pm", "."]
    answers = {service: client.post(TAG, json={"sentences": [sentence], "service": service}).get_json()["results"][0]
               for service in ("Restaurants_1", "Music_1", None)}
    for result in answers.values():
        assert [(s["label"], s["start"], s["end"]) for s in result["spans"]] == tags_to_spans(result["tags"], "bio")
        for span in result["spans"]:
            assert span["text"] == " ".join(sentence[span["start"]:span["end"]])
    # the service is the model's first token: another service, other probabilities
    assert answers["Restaurants_1"]["scores"] != answers["Music_1"]["scores"]


def test_a_service_for_a_model_that_takes_none_is_a_clear_error(client):
    response = client.post("/v1/models/pos:tag", json={"sentences": [["Hi"]], "service": "Restaurants_1"})
    assert response.status_code == 400 and "only span models" in response.get_json()["error"]["message"]
    response = client.post(TAG, json={"sentences": [["Hi"]], "service": "x" * 101})
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_request"


def test_a_dialog_turn_answers_its_act_and_its_slots_in_one_call(client):
    created = client.post("/v1/dialogs", json={"model": "dialog-act", "slots": "slots"})
    assert created.status_code == 201
    session = created.get_json()
    assert session["slots"] == {"name": "slots", "version": 1} and session["turn"] == 0
    text = "A table in San Jose at 7 pm."
    answer = client.post(f"/v1/dialogs/{session['session_id']}/turns",
                         json={"text": text, "speaker": "A", "service": "Restaurants_1", "turn": 1}).get_json()
    assert answer["turn"] == 1 and answer["label"] in answer["scores"]
    alone = client.post(TAG, json={"texts": [text], "service": "Restaurants_1"}).get_json()["results"][0]["spans"]
    assert answer["slots"] == alone  # the same span model, the same turn: the same slots
    again = client.post(f"/v1/dialogs/{session['session_id']}/turns",
                        json={"text": text, "speaker": "A", "service": "Restaurants_1", "turn": 1}).get_json()
    assert again == answer  # a retry: its answer again, slots included, taken once
    tokens = client.post(f"/v1/dialogs/{session['session_id']}/turns",
                         json={"tokens": ["Play", "Hey", "Jude"], "service": "Music_1"}).get_json()
    assert tokens["turn"] == 2 and all(0 <= s["start"] < s["end"] <= 3 for s in tokens["slots"])
    shown = client.get(f"/v1/dialogs/{session['session_id']}").get_json()
    assert shown["slots"] == {"name": "slots", "version": 1} and shown["turn"] == 2
    reset = client.post(f"/v1/dialogs/{session['session_id']}/reset").get_json()
    assert reset["slots"] == {"name": "slots", "version": 1} and reset["turn"] == 0


@pytest.mark.parametrize("body, status, code", [
    ({"model": "dialog-act", "slots": "pos"}, 400, "not_a_span_model"),
    ({"model": "dialog-act", "slots": "nope"}, 404, "model_not_found"),
])
def test_slots_must_name_a_span_model(client, body, status, code):
    response = client.post("/v1/dialogs", json=body)
    assert response.status_code == status and response.get_json()["error"]["code"] == code


def test_a_session_without_slots_takes_no_service(client):
    session = client.post("/v1/dialogs", json={"model": "dialog-act"}).get_json()
    assert session["slots"] is None
    response = client.post(f"/v1/dialogs/{session['session_id']}/turns", json={"text": "hi", "service": "Music_1"})
    assert response.status_code == 400 and "span model" in response.get_json()["error"]["message"]
    assert client.get(f"/v1/dialogs/{session['session_id']}").get_json()["turn"] == 0  # nothing taken


def test_the_slot_model_is_kept_in_the_stored_state():
    state = SessionState("id", "dialog-act", 1, np.zeros(3, np.float32), np.zeros(3, np.float32), slots="slots",
                         slots_version=2)
    again = SessionState.from_bytes(state.to_bytes())
    assert (again.slots, again.slots_version) == ("slots", 2)
