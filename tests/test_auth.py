"""API keys (``SEQTAG_API_KEYS``): every route but health and docs needs a valid bearer key; a dialog session
belongs to the key that opened it; live sessions are limited per key. Both session stores (Redis: a real
``redis-server``)."""

import pytest

from service.auth import ApiKeys
from test_sessions import close, make_app, make_models_dir

CHATBOT, BATCH = "chatbot-key-0123456789abcdef", "batch-key-fedcba9876543210"
KEYS = f"chatbot:{CHATBOT},batch:{BATCH}"


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, random_dialog_dirs, random_tagger_dir):
    return make_models_dir(tmp_path_factory.mktemp("models"), random_dialog_dirs, random_tagger_dir)


@pytest.fixture(scope="module", params=["memory", "redis"])
def app(request, models_dir):
    app = make_app(request.param, models_dir, request, api_keys=KEYS, max_sessions_per_key=3)
    yield app
    close(app)


@pytest.fixture
def client(app):
    return app.test_client()


def test_routes_need_a_valid_key(client):
    tag = {"sentences": [["The", "dog", "barks", "."]]}
    for headers in ({}, bearer("wrong-key-0123456789abcdef"), bearer(CHATBOT[:-1]), {"Authorization": CHATBOT},
                    {"Authorization": f"Basic {CHATBOT}"}, bearer("")):
        for method, path, body in (("post", "/v1/models/pos:tag", tag), ("get", "/v1/models", None),
                                   ("get", "/metrics", None), ("post", "/v1/dialogs", {"model": "dialog-act"}),
                                   ("get", "/v1/no-such-route", None)):
            response = getattr(client, method)(path, json=body, headers=headers)
            assert response.status_code == 401, (headers, path)
            assert response.get_json()["error"]["code"] == "unauthorized"
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    for key in (CHATBOT, BATCH):
        response = client.post("/v1/models/pos:tag", json=tag, headers=bearer(key))
        assert response.status_code == 200 and len(response.get_json()["results"][0]["tags"]) == 4
    # Open to everyone: health checks, the API document and its pages, the web page.
    for path in ("/healthz", "/readyz", "/openapi.json", "/docs/swagger/", "/"):
        assert client.get(path).status_code == 200, path


def test_a_session_belongs_to_the_key_that_opened_it(client):
    created = client.post("/v1/dialogs", json={"model": "dialog-act"}, headers=bearer(CHATBOT))
    assert created.status_code == 201
    session = created.get_json()["session_id"]
    turn = {"text": "Do you have any pets?", "speaker": "A"}
    assert client.post(f"/v1/dialogs/{session}/turns", json=turn, headers=bearer(CHATBOT)).status_code == 200
    # Another key cannot see, use, reset or delete it: 404, the same answer as for a session that does not exist.
    for method, path, body in (("get", "", None), ("post", "/turns", turn), ("post", "/reset", None), ("delete", "", None)):
        response = getattr(client, method)(f"/v1/dialogs/{session}{path}", json=body, headers=bearer(BATCH))
        assert response.status_code == 404 and response.get_json()["error"]["code"] == "session_not_found", path
    view = client.get(f"/v1/dialogs/{session}", headers=bearer(CHATBOT)).get_json()
    assert view["turn"] == 1  # the other key's turn and reset changed nothing
    assert client.delete(f"/v1/dialogs/{session}", headers=bearer(CHATBOT)).status_code == 204


def test_live_sessions_are_limited_per_key(client):
    opened = []
    for _ in range(3):
        response = client.post("/v1/dialogs", json={"model": "dialog-act"}, headers=bearer(CHATBOT))
        assert response.status_code == 201
        opened.append(response.get_json()["session_id"])
    refused = client.post("/v1/dialogs", json={"model": "dialog-act"}, headers=bearer(CHATBOT))
    assert refused.status_code == 429 and refused.get_json()["error"]["code"] == "too_many_sessions"
    # The limit is per key: the other key still opens sessions.
    other = client.post("/v1/dialogs", json={"model": "dialog-act"}, headers=bearer(BATCH))
    assert other.status_code == 201
    # Closing one frees its place.
    assert client.delete(f"/v1/dialogs/{opened[0]}", headers=bearer(CHATBOT)).status_code == 204
    assert client.post("/v1/dialogs", json={"model": "dialog-act"}, headers=bearer(CHATBOT)).status_code == 201


def test_the_api_document_declares_the_bearer_scheme(client):
    document = client.get("/openapi.json").get_json()
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert document["paths"]["/v1/dialogs"]["post"]["security"] == [{"bearer": []}]
    assert "401" in document["paths"]["/v1/dialogs"]["post"]["responses"]
    assert "security" not in document["paths"]["/healthz"]["get"]


def test_key_list_parsing():
    keys = ApiKeys(f" chatbot:{CHATBOT} , {BATCH} ")
    assert keys.names == ["chatbot", "key2"]
    assert keys.owner(CHATBOT) == "chatbot" and keys.owner(BATCH) == "key2" and keys.owner("x" * 30) is None
    assert not ApiKeys("")
    for bad, message in (("short:abc", "at least 16"), (f"a b:{CHATBOT}", "name"),
                         (f"same:{CHATBOT},same:{BATCH}", "twice")):
        with pytest.raises(ValueError, match=message):
            ApiKeys(bad)
