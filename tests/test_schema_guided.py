"""The schema-guided span tagger and next actions in a service's own terms, end to end on a tiny model.

A tiny BERT (``tiny_bert``) and 30 SGD training dialogues train the model through ``train_schema_spans`` in seconds;
it is exported and served. What is checked is what a team adding a service expects: a made-up service registered
through the API (``Pottery_1``, slot names that appear nowhere in SGD) is answered only in its own names, by every
worker and after a restart; a service nobody registered is 404 with how to register it; the exported model takes any
batch size, turn length and slot count.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA, first_lines

SGD = DATA / "sgd"
pytestmark = pytest.mark.skipif(not (SGD / "sgd-train.jsonl").is_file(), reason="SGD not found under ../shared/data")

POTTERY = {
    "service_name": "Pottery_1", "description": "Book firings at a pottery studio",
    "slots": [{"name": "kiln_temperature", "description": "The temperature the kiln fires at, in degrees",
               "is_categorical": False, "possible_values": []},
              {"name": "glaze_color", "description": "The colour of the glaze on the pot", "is_categorical": False,
               "possible_values": []},
              {"name": "firing_kind", "description": "Bisque or glaze firing", "is_categorical": True,
               "possible_values": ["bisque", "glaze"]}],
    "intents": [{"name": "BookFiring", "description": "Book a kiln firing", "is_transactional": True,
                 "required_slots": ["kiln_temperature", "glaze_color"], "optional_slots": {}, "result_slots": []}],
}
POTTERY_SLOTS = {"kiln_temperature", "glaze_color", "firing_kind"}
POTTERY_SPAN_TAGS = {"O", *(f"{p}-{s}" for p in "BI" for s in ("kiln_temperature", "glaze_color"))}


@pytest.fixture(scope="module")
def saved(schema_model_dir):
    from training.schema_guided.saved import SavedSchemaTagger

    return SavedSchemaTagger(schema_model_dir)


def test_export_records_and_ships_its_schemas(schema_model_dir, saved):
    metadata = json.loads((schema_model_dir / "metadata.json").read_text())
    assert metadata["schema_guided"] and metadata["kind"] == "tagger" and metadata["task"] == "spans"
    assert metadata["export_check"]["max_abs_difference"] <= metadata["export_check"]["tolerance"]
    trained = {json.loads(line)["turns"][0]["service"] for line in first_lines(SGD / "sgd-train.jsonl", 30).splitlines()}
    assert trained <= set(saved.shipped) and set(metadata["services"]) == set(saved.shipped)
    dev = metadata["metrics"]["dev"]
    assert dev["seen_services"]["turns"] + dev["unseen_services"]["turns"] == dev["turns"] > 0
    assert set(dev["unseen_services"]["services"]).isdisjoint(saved.shipped)


def test_exported_model_takes_any_batch_turn_length_and_slot_count(saved):
    """The SavedModel on dynamic axes, batch != time both ways: each row as when it is alone."""
    from training.common.service_schema import parse_schema

    pottery = saved.encode_service(parse_schema(POTTERY))
    restaurants = saved.encode_service(saved.shipped[sorted(saved.shipped)[0]])
    turns = [["fire", "it", "at", "1200", "degrees"], ["blue", "glaze"], ["a", "b", "c", "d", "e", "f", "g"]]
    for rows in (turns, turns[:2] * 3 + turns[2:]):  # 3 rows of up to 7 words; 7 rows
        encodings = [pottery if i % 2 else restaurants for i in range(len(rows))]
        together = saved.emissions(rows, encodings)
        for row, encoding, probabilities in zip(rows, encodings, together):
            alone = saved.emissions([row], [encoding])[0]
            assert probabilities.shape == (len(row), 1 + 2 * len(encoding.slots))
            np.testing.assert_allclose(probabilities, alone, atol=1e-5)
            np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)


def test_the_fast_path_equals_the_saved_model_and_a_wrong_one_is_refused(schema_model_dir, saved, monkeypatch):
    """``runtime="onnx"`` (the service's): slot vectors and probabilities within 1e-5 of the SavedModel's on turns
    of any length, two services and their slot counts in one batch; a graph built from a bias off by 0.01 is
    refused at load (the service rejects such a version)."""
    from training.common.fast_path import FastPathMismatch
    from training.common.service_schema import parse_schema
    from training.schema_guided import fast
    from training.schema_guided.saved import SavedSchemaTagger

    onnx = SavedSchemaTagger(schema_model_dir, runtime="onnx")
    assert onnx.runtime == "onnx" and onnx.fast_check["max_difference"] <= 1e-5, onnx.fast_check
    services = [parse_schema(POTTERY), saved.shipped[sorted(saved.shipped)[0]]]
    pairs = [(saved.encode_service(s), onnx.encode_service(s)) for s in services]
    for reference, fast_encoding in pairs:
        np.testing.assert_allclose(fast_encoding.vectors, reference.vectors, atol=1e-5)
    turns = [["fire", "it", "at", "1200", "degrees", "with", "a", "blue", "glaze"], ["ok"], ["book", "a", "table"] * 9]
    encodings = [pairs[i % 2][0] for i in range(len(turns))]
    for expected, got in zip(saved.emissions(turns, encodings), onnx.emissions(turns, encodings)):
        np.testing.assert_allclose(got, expected, atol=1e-5)

    read = fast.weights_by_path

    def off_by_a_bias(variables):
        weights = read(variables)
        weights["slot_scores/outside/bias"] = weights["slot_scores/outside/bias"] + np.float32(0.01)
        return weights

    monkeypatch.setattr(fast, "weights_by_path", off_by_a_bias)
    with pytest.raises(FastPathMismatch, match="differ from the SavedModel"):
        SavedSchemaTagger(schema_model_dir, runtime="onnx")


def test_tags_name_only_the_service_slots(saved):
    from training.common.service_schema import parse_schema

    pottery = saved.encode_service(parse_schema(POTTERY))
    assert pottery.slots == ("kiln_temperature", "glaze_color")  # spans name only non-categorical slots
    assert pottery.all_slots == ("kiln_temperature", "glaze_color", "firing_kind")
    tagged = saved.tag([["fire", "it", "at", "1200", "degrees", "with", "a", "blue", "glaze"]] * 2,
                       conditions=[pottery, pottery])
    for result in tagged:
        assert set(result.tags) <= POTTERY_SPAN_TAGS and result.columns == list(pottery.tags)
        for span in result.spans:
            assert span.label in {"kiln_temperature", "glaze_color"} and 0 <= span.start < span.end <= 9
            assert result.tags[span.start] == f"B-{span.label}"  # well formed: B then I of the same slot
            assert all(t == f"I-{span.label}" for t in result.tags[span.start + 1:span.end])
    with pytest.raises(ValueError, match="ServiceEncoding"):
        saved.tag([["a"]], conditions=["Pottery_1"])


def test_action_map_speaks_the_service(saved):
    from training.common.service_schema import parse_schema
    from training.schema_guided.actions import build_action_map, source_slot_vectors

    labels = ["GOODBYE", "INFORM_COUNT(count)", "REQUEST(time)", "REQUEST(city)", "OFFER(title)", "CONFIRM(nonexistent)"]
    sources = source_slot_vectors([saved.encode_service(s) for s in saved.shipped.values()])
    mapping = build_action_map(labels, sources, saved.encode_service(parse_schema(POTTERY)))
    for candidate in mapping.candidates:
        slot = re.fullmatch(r"[A-Z_]+\((.*)\)", candidate)
        assert candidate in ("GOODBYE", "INFORM_COUNT(count)") or slot.group(1) in POTTERY_SLOTS
    assert mapping.forward[labels.index("CONFIRM(nonexistent)")] == -1  # no description: never guessed
    index = {label: i for i, label in enumerate(labels)}
    decided = mapping.decide(["GOODBYE", "REQUEST(time)"], index)
    assert "GOODBYE" in decided and all(d in mapping.candidates for d in decided)
    scores = mapping.scores(np.array([0.9, 0.1, 0.8, 0.2, 0.3, 0.7], np.float32))
    assert scores.shape == (len(mapping.candidates),) and scores[mapping.candidates.index("GOODBYE")] == pytest.approx(0.9)
    # the service's actions map back onto labels the model knows
    assert set(mapping.to_model(["REQUEST(kiln_temperature)", "GOODBYE", "NOT_AN_ACTION"])) <= set(labels)


# --- served: a registered made-up service, two workers, a restart ---------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory, schema_model_dir, random_dialog_dirs):
    from service import create_app

    tmp = tmp_path_factory.mktemp("schema-served")
    shutil.copytree(schema_model_dir, tmp / "models" / "slots" / "1")
    shutil.copytree(random_dialog_dirs["dialog-action"], tmp / "models" / "dialog-action" / "1")
    settings = {"models_dir": str(tmp / "models"), "poll_interval_seconds": 0, "services_dir": str(tmp / "services")}
    apps = []

    def new_worker():
        apps.append(create_app(settings))
        return apps[-1].test_client()

    yield new_worker
    for app in apps:
        app.extensions["seqtag.registry"].close()


def _assert_pottery_turn(answer: dict) -> None:
    for label in [*answer["labels"], *answer["scores"]]:
        slot = re.fullmatch(r"[A-Z_]+\((.*)\)", label)
        assert slot is None or slot.group(1) in POTTERY_SLOTS | {"count", "intent"}, label
    assert all(s["label"] in {"kiln_temperature", "glaze_color"} for s in answer["slots"])


def test_a_registered_service_is_answered_in_its_own_names_by_every_worker(served):
    worker, other = served(), served()
    unknown = worker.post("/v1/models/slots:tag", json={"sentences": [["fire", "it"]], "service": "Pottery_1"})
    assert unknown.status_code == 404 and unknown.get_json()["error"]["code"] == "unknown_service"
    assert "PUT /v1/services/Pottery_1" in unknown.get_json()["error"]["message"]
    assert worker.put("/v1/services/Pottery_1", json=POTTERY).status_code == 201

    for client in (worker, other):  # the other worker reads the registration from the shared store
        tagged = client.post("/v1/models/slots:tag", json={"texts": ["Fire it at 1200 degrees with a blue glaze."],
                                                           "service": "Pottery_1", "top_k": 2})
        assert tagged.status_code == 200, tagged.get_json()
        result = tagged.get_json()["results"][0]
        assert set(result["tags"]) <= POTTERY_SPAN_TAGS
        assert {k["tag"] for token in result["top_k"] for k in token} <= POTTERY_SPAN_TAGS
        assert all(s["label"] in {"kiln_temperature", "glaze_color"} for s in result["spans"])

        session = client.post("/v1/dialogs", json={"model": "dialog-action", "slots": "slots"}).get_json()
        turn = client.post(f"/v1/dialogs/{session['session_id']}/turns",
                           json={"text": "Fire it at 1200 degrees with a blue glaze", "speaker": "USER",
                                 "service": "Pottery_1", "turn": 1})
        assert turn.status_code == 200, turn.get_json()
        _assert_pottery_turn(turn.get_json())
        again = client.post(f"/v1/dialogs/{session['session_id']}/turns",
                            json={"text": "Fire it at 1200 degrees with a blue glaze", "speaker": "USER",
                                  "service": "Pottery_1", "turn": 1})
        assert again.get_json() == turn.get_json()  # a retry: the same answer, in the same names
        top = client.post(f"/v1/dialogs/{session['session_id']}/turns",
                          json={"text": "Yes", "speaker": "USER", "service": "Pottery_1", "top_k": 3,
                                "system_actions": ["REQUEST(glaze_color)"]})
        assert top.status_code == 200 and len(top.get_json()["scores"]) == 3
        _assert_pottery_turn(top.get_json())
        wrong = client.post(f"/v1/dialogs/{session['session_id']}/turns",
                            json={"text": "Yes", "speaker": "USER", "service": "Pottery_1",
                                  "system_actions": ["REQUEST(time)"]})
        assert wrong.status_code == 400 and wrong.get_json()["error"]["code"] == "unknown_action"
        nope = client.post(f"/v1/dialogs/{session['session_id']}/turns",
                           json={"text": "Hi", "speaker": "USER", "service": "Nope_9"})
        assert nope.status_code == 404 and nope.get_json()["error"]["code"] == "unknown_service"
        assert client.get(f"/v1/dialogs/{session['session_id']}").get_json()["turn"] == 2  # the 4xx took nothing

    no_service = worker.post("/v1/models/slots:tag", json={"sentences": [["fire", "it"]]})
    assert no_service.status_code == 400 and no_service.get_json()["error"]["code"] == "service_required"

    restarted = served()  # a new process on the same store: the registration is still there
    assert restarted.get("/v1/services/Pottery_1").get_json()["source"] == "registered"
    tagged = restarted.post("/v1/models/slots:tag", json={"sentences": [["blue", "glaze"]], "service": "Pottery_1"})
    assert tagged.status_code == 200 and set(tagged.get_json()["results"][0]["tags"]) <= POTTERY_SPAN_TAGS
    shipped = restarted.get("/v1/services").get_json()
    sources = {s["service_name"]: s["source"] for s in shipped["services"]}
    assert sources["Pottery_1"] == "registered" and "shipped" in sources.values()
    assert restarted.delete("/v1/services/Pottery_1").status_code == 204
    gone = other.post("/v1/models/slots:tag", json={"sentences": [["blue"]], "service": "Pottery_1"})
    assert gone.status_code == 404


def test_the_int8_turn_encoder_is_checked_and_a_turn_does_not_depend_on_its_company(schema_model_dir, saved,
                                                                                     monkeypatch):
    """``precision="int8"`` (the service's SEQTAG_ENCODER_PRECISION): the int8 turn encoder is checked against the
    float one at load; each turn takes an int8 call of its own, so its probabilities are the same bit for bit alone
    or beside longer turns; a model that int8 moves beyond the tolerance tags in float32."""
    from training.common import fast_path
    from training.schema_guided.saved import SavedSchemaTagger

    int8 = SavedSchemaTagger(schema_model_dir, runtime="onnx", precision="int8")
    assert int8.precision == "int8" and int8.fast_check["int8_max_difference"] <= 0.25, int8.fast_check
    encoding = int8.encode_service(saved.shipped[sorted(saved.shipped)[0]])
    turns = [["book", "a", "table"], ["fire", "it", "at", "1200", "degrees", "with", "a", "blue", "glaze"] * 2]
    alone = int8.emissions(turns[:1], [encoding])[0]
    beside = int8.emissions(turns, [encoding, encoding])[0]
    assert np.array_equal(alone, beside)
    reference = saved.emissions(turns[:1], [encoding])[0]
    assert 0 < np.abs(alone - reference).max() <= 0.25  # int8 indeed, within the check's tolerance

    monkeypatch.setattr(fast_path, "INT8_TOLERANCE", 0.0)
    refused = SavedSchemaTagger(schema_model_dir, runtime="onnx", precision="int8")
    assert refused.precision == "float32" and refused.fast_check["precision"] == "float32"
