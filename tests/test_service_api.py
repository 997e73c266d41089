"""The HTTP API contract through Flask's test client: answers, versions, and every bad input's 4xx."""

import shutil

import pytest

from service import create_app


@pytest.fixture(scope="module")
def app(tmp_path_factory, random_tagger_dir):
    models_dir = tmp_path_factory.mktemp("served")
    shutil.copytree(random_tagger_dir, models_dir / "pos" / "1")
    app = create_app({"models_dir": str(models_dir), "poll_interval_seconds": 0, "batch_timeout_ms": 1,
                      "max_sentences": 4, "max_tokens_per_sentence": 10, "max_token_chars": 12,
                      "max_text_chars": 200, "max_body_bytes": 4096})
    yield app
    app.extensions["seqtag.registry"].close()


@pytest.fixture
def client(app):
    return app.test_client()


LABELS = {"ADP", "DET", "NOUN", "NUM", "PUNCT", "VERB"}


def test_health_and_readiness(client):
    assert client.get("/healthz").json == {"status": "ok"}
    assert client.get("/readyz").json == {"status": "ready", "models": {"pos": 1}}


def test_model_listing(client):
    listing = client.get("/v1/models").json["models"]
    assert [m["name"] for m in listing] == ["pos"]
    model = client.get("/v1/models/pos").json
    assert model["kind"] == "tagger" and model["state"] == "AVAILABLE" and model["serving_version"] == 1
    assert set(model["labels"]) == LABELS and model["versions"][0]["state"] == "AVAILABLE"


def test_tag_sentences_in_order(client):
    sentences = [["The", "dog", "barks", "."], ["Hi"], ["A", "cat", "sleeps", "at", "12:30", "!"]]
    response = client.post("/v1/models/pos:tag", json={"sentences": sentences})
    assert response.status_code == 200
    body = response.json
    assert body["model"] == {"name": "pos", "version": 1}
    assert [r["tokens"] for r in body["results"]] == sentences
    for result in body["results"]:
        assert len(result["tags"]) == len(result["scores"]) == len(result["tokens"])
        assert set(result["tags"]) <= LABELS and all(0 < s <= 1 for s in result["scores"])


def test_tag_texts_with_offsets_and_top_k(client):
    text = "The dog doesn't bark."
    body = client.post("/v1/models/pos:tag?version=1", json={"texts": [text], "top_k": 3}).json
    result = body["results"][0]
    assert result["tokens"] == ["The", "dog", "does", "n't", "bark", "."]
    assert [text[a:b] for a, b in result["offsets"]] == result["tokens"]
    for tag, score, best in zip(result["tags"], result["scores"], result["top_k"]):
        assert len(best) == 3 and best[0] == {"tag": tag, "score": score}
        assert [b["score"] for b in best] == sorted((b["score"] for b in best), reverse=True)


def test_a_paragraph_is_cut_into_sentences_each_tagged_as_one_model_input(client):
    """The model's tokenizer (its metadata says ud-english) finds the sentences of a text: the period inside the
    text is a token, each sentence is tagged alone (as the model was trained), and the result says where each
    one is."""
    text = "I live in San Jose. Can you help?"
    result = client.post(TAG, json={"texts": [text], "top_k": 2}).json["results"][0]
    assert result["tokens"] == ["I", "live", "in", "San", "Jose", ".", "Can", "you", "help", "?"]
    assert result["sentences"] == [[0, 6], [6, 10]]
    assert [text[a:b] for a, b in result["offsets"]] == result["tokens"]
    alone = client.post(TAG, json={"sentences": [result["tokens"][:6], result["tokens"][6:]], "top_k": 2}).json
    assert result["tags"] == [tag for r in alone["results"] for tag in r["tags"]]
    assert result["top_k"] == [best for r in alone["results"] for best in r["top_k"]]


def test_a_text_longer_than_a_model_input_is_tagged_in_pieces(client):
    """Texts are bounded by characters; one of 23 tokens goes through the model (10 tokens at most) as
    pieces of 10, 10 and 3, and comes back as one result: each piece tagged as that sentence alone."""
    words = [f"w{i}" for i in range(23)]
    whole = client.post(TAG, json={"texts": [" ".join(words)], "top_k": 2}).json["results"][0]
    assert whole["tokens"] == words and len(whole["tags"]) == len(whole["scores"]) == len(whole["top_k"]) == 23
    assert whole["offsets"][-1] == [len(" ".join(words)) - 3, len(" ".join(words))]
    assert whole["sentences"] == [[0, 23]]  # one sentence, three model inputs
    pieces = client.post(TAG, json={"sentences": [words[:10], words[10:20], words[20:]], "top_k": 2}).json["results"]
    assert whole["tags"] == [tag for piece in pieces for tag in piece["tags"]]
    assert whole["top_k"] == [best for piece in pieces for best in piece["top_k"]]


TAG = "/v1/models/pos:tag"


@pytest.mark.parametrize("method, url, kwargs, status, code", [
    ("post", TAG, {"data": "{\"sentences\": [[\"a\"]", "content_type": "application/json"}, 400, "invalid_json"),
    ("post", TAG, {"data": b"\xff\xfe", "content_type": "application/json"}, 400, "invalid_json"),
    ("post", TAG, {"data": "sentences=a", "content_type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"),
    ("post", TAG, {"data": "{}"}, 415, "unsupported_media_type"),
    ("post", TAG, {"json": {"sentences": [["x"] * 5] * 200}}, 413, "payload_too_large"),
    ("post", TAG, {"json": {}}, 400, "invalid_request"),
    ("post", TAG, {"json": []}, 400, "invalid_request"),
    ("post", TAG, {"json": {"sentences": []}}, 400, "invalid_request"),
    ("post", TAG, {"json": {"sentences": [[]]}}, 400, "invalid_request"),
    ("post", TAG, {"json": {"sentences": [["a", " "]]}}, 400, "invalid_token"),
    ("post", TAG, {"json": {"sentences": [["a", 3]]}}, 400, "invalid_request"),
    ("post", TAG, {"json": {"sentences": [["a", None]]}}, 400, "invalid_request"),
    ("post", TAG, {"json": {"sentences": "The dog"}}, 400, "invalid_request"),
    ("post", TAG, {"json": {"sentences": [["a"]] * 5}}, 400, "too_many_sentences"),
    ("post", TAG, {"json": {"sentences": [["a"] * 11]}}, 400, "sentence_too_long"),
    ("post", TAG, {"json": {"sentences": [["a" * 13]]}}, 400, "token_too_long"),
    ("post", TAG, {"json": {"texts": ["a" * 201]}}, 400, "text_too_long"),
    ("post", TAG, {"json": {"texts": ["   "]}}, 400, "invalid_request"),
    ("post", TAG, {"json": {"texts": ["a"], "sentences": [["a"]]}}, 400, "invalid_request"),
    ("post", TAG, {"json": {"sentences": [["a"]], "colour": "red"}}, 400, "invalid_request"),
    ("post", TAG, {"json": {"sentences": [["a"]], "top_k": 0}}, 400, "invalid_request"),
    ("post", TAG, {"json": {"sentences": [["a"]], "top_k": 99}}, 400, "invalid_request"),
    ("post", TAG, {"json": {"sentences": [["a"]], "top_k": "2"}}, 400, "invalid_request"),
    ("post", TAG + "?version=7", {"json": {"sentences": [["a"]]}}, 404, "version_not_found"),
    ("post", TAG + "?version=-1", {"json": {"sentences": [["a"]]}}, 400, "invalid_request"),
    ("post", "/v1/models/nope:tag", {"json": {"sentences": [["a"]]}}, 404, "model_not_found"),
    ("post", "/v1/models/..%2Fetc:tag", {"json": {"sentences": [["a"]]}}, 404, "not_found"),
    ("get", "/v1/models/nope", {}, 404, "model_not_found"),
    ("get", TAG, {}, 405, "method_not_allowed"),
    ("delete", "/v1/models", {}, 405, "method_not_allowed"),
    ("get", "/nowhere", {}, 404, "not_found"),
])
def test_bad_input_gets_a_4xx_with_the_error_shape(client, method, url, kwargs, status, code):
    response = getattr(client, method)(url, **kwargs)
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.json
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code and body["error"]["message"]


def test_unready_service_says_so(tmp_path):
    app = create_app({"models_dir": str(tmp_path), "poll_interval_seconds": 0})
    response = app.test_client().get("/readyz")
    assert response.status_code == 503 and response.json["error"]["code"] == "not_ready"
