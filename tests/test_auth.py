"""API keys (``SEQTAG_API_KEYS``): every route but health and docs needs a valid bearer key; a dialog session
belongs to the key that opened it; live sessions are limited per key. Both session stores (Redis: a real
``redis-server``)."""

import pytest

from reliability import record
from service.auth import ApiKeys, parse_key_limits
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
    # The batch key has its own limits: more sentences per request, a smaller body, more sessions.
    limits = '{"batch": {"max_sentences": 300, "max_body_bytes": 2000, "max_sessions_per_key": 5}}'
    app = make_app(request.param, models_dir, request, api_keys=KEYS, max_sessions_per_key=3, max_sentences=4,
                   api_key_limits=limits)
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
    for path in ("/healthz", "/readyz", "/openapi.json", "/docs/swagger/", "/docs/swagger/swagger-ui-bundle.js",
                 "/docs/redoc/", "/docs/redoc/assets/js/redoc.standalone.js", "/docs/scalar/",
                 "/docs/scalar/assets/js/scalar.standalone.js", "/"):
        assert client.get(path).status_code == 200, path
    assert client.get("/docs/").status_code == 302
    record("auth", 13, "API keys on: requests without a key, with a wrong, truncated, unprefixed, Basic or empty key",
           "6 credentials x 5 routes (tag, models, metrics, dialogs, unknown route); other keys' sessions: "
           "show, turn, reset, delete", "0 let through: 401 with WWW-Authenticate; another key's session 404, unchanged")


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
    # The limit is per key: the other key still opens sessions, up to its own limit (5).
    others = [client.post("/v1/dialogs", json={"model": "dialog-act"}, headers=bearer(BATCH)).status_code
              for _ in range(6)]
    assert others == [201] * 5 + [429]
    # Closing one frees its place.
    assert client.delete(f"/v1/dialogs/{opened[0]}", headers=bearer(CHATBOT)).status_code == 204
    assert client.post("/v1/dialogs", json={"model": "dialog-act"}, headers=bearer(CHATBOT)).status_code == 201


def test_request_limits_per_key(client):
    sentences = {"sentences": [["Hi", "."]] * 6}  # above the service's 4 sentences, within the batch key's 300
    refused = client.post("/v1/models/pos:tag", json=sentences, headers=bearer(CHATBOT))
    assert refused.status_code == 400 and refused.get_json()["error"]["code"] == "too_many_sentences"
    assert client.post("/v1/models/pos:tag", json=sentences, headers=bearer(BATCH)).status_code == 200
    # The batch key's body limit (2,000 bytes) is below the service's (1 MiB).
    big = {"sentences": [["word"] * 100] * 4}
    assert client.post("/v1/models/pos:tag", json=big, headers=bearer(CHATBOT)).status_code == 200
    too_big = client.post("/v1/models/pos:tag", json=big, headers=bearer(BATCH))
    assert too_big.status_code == 413 and too_big.get_json()["error"]["code"] == "payload_too_large"


def test_the_api_document_declares_the_bearer_scheme(client):
    document = client.get("/openapi.json").get_json()
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert document["paths"]["/v1/dialogs"]["post"]["security"] == [{"bearer": []}]
    assert "401" in document["paths"]["/v1/dialogs"]["post"]["responses"]
    assert "security" not in document["paths"]["/healthz"]["get"]


def test_key_limits_parsing():
    keys = ApiKeys(f"chatbot:{CHATBOT}")
    assert parse_key_limits('{"chatbot": {"max_sentences": 9}}', keys) == {"chatbot": {"max_sentences": 9}}
    for bad, message in (('{"other": {}}', "not the name"), ('{"chatbot": {"models_dir": 1}}', "not a per-key"),
                         ('{"chatbot": {"max_sentences": -1}}', "whole number"), ("[", "not JSON")):
        with pytest.raises(ValueError, match=message):
            parse_key_limits(bad, keys)


def test_key_list_parsing():
    keys = ApiKeys(f" chatbot:{CHATBOT} , {BATCH} ")
    assert keys.names == ["chatbot", "key2"]
    assert keys.owner(CHATBOT) == "chatbot" and keys.owner(BATCH) == "key2" and keys.owner("x" * 30) is None
    assert not ApiKeys("")
    for bad, message in (("short:abc", "at least 16"), (f"a b:{CHATBOT}", "name"),
                         (f"same:{CHATBOT},same:{BATCH}", "twice")):
        with pytest.raises(ValueError, match=message):
            ApiKeys(bad)


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_creates_racing_at_the_limit_let_exactly_the_limit_through(backend, models_dir, request):
    """Many sessions opened at once by one key: exactly its limit get 201, the rest 429, however they
    interleave. With Redis, two apps (two workers) share the store and the creates are split between them."""
    import secrets
    import threading

    name = f"racer{secrets.token_hex(4)}"  # a fresh key name: the Redis store outlives each app
    key = f"{name}-key-{secrets.token_hex(8)}"
    limit, attempts = 4, 48
    apps = [make_app(backend, models_dir, request, api_keys=f"{name}:{key}", max_sessions_per_key=limit,
                     request_log=False) for _ in range(2 if backend == "redis" else 1)]
    barrier = threading.Barrier(attempts)
    statuses: list[int] = []

    def create(app):
        client = app.test_client()
        barrier.wait()
        response = client.post("/v1/dialogs", json={"model": "dialog-act"}, headers=bearer(key))
        if response.status_code == 429:
            assert response.get_json()["error"]["code"] == "too_many_sessions"
        statuses.append(response.status_code)

    try:
        threads = [threading.Thread(target=create, args=(apps[i % len(apps)],)) for i in range(attempts)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(statuses) == [201] * limit + [429] * (attempts - limit)
        for app in apps:  # and every app's store counts exactly the limit
            assert app.extensions["seqtag.sessions"].count_owned(name) == limit
    finally:
        for app in apps:
            close(app)
