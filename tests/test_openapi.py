"""The OpenAPI document: valid OpenAPI 3.1, every route in it, and real answers of every route (successes
and errors) conform to the schemas it gives for their status."""

import shutil

import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from service import create_app


@pytest.fixture(scope="module")
def app(tmp_path_factory, random_tagger_dir, random_dialog_dirs, random_span_tagger_dir):
    models_dir = tmp_path_factory.mktemp("served")
    shutil.copytree(random_tagger_dir, models_dir / "pos" / "1")
    shutil.copytree(random_span_tagger_dir, models_dir / "slots" / "1")
    for name, directory in random_dialog_dirs.items():
        shutil.copytree(directory, models_dir / name / "1")
    app = create_app({"models_dir": str(models_dir), "poll_interval_seconds": 0, "max_body_bytes": 4096})
    yield app
    app.extensions["seqtag.registry"].close()


@pytest.fixture(scope="module")
def document(app):
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    return response.json


def openapi_path(rule: str) -> str:
    """Werkzeug's ``/v1/models/<model_name:name>:tag`` as OpenAPI's ``/v1/models/{name}:tag``."""
    import re
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule)


def test_document_is_valid_openapi_and_lists_every_route(app, document):
    validate(document)
    assert document["openapi"].startswith("3.1")
    served = {(openapi_path(rule.rule), method.lower()) for rule in app.url_map.iter_rules()
              for method in rule.methods - {"HEAD", "OPTIONS"}
              if rule.endpoint != "static" and not rule.endpoint.startswith("openapi")}
    documented = {(path, method) for path, operations in document["paths"].items() for method in operations}
    assert served == documented
    assert len(served) >= 10  # models, tagging, health and the five dialog routes
    tag = document["paths"]["/v1/models/{name}:tag"]["post"]
    assert tag["requestBody"]["content"]["application/json"]["schema"]["$ref"].startswith("#/components/schemas/TagRequest")
    assert {"200", "400", "404", "413", "415"} <= set(tag["responses"])
    assert "400" not in document["paths"]["/healthz"]["get"]["responses"]  # reads no input


def conforms(document, path, method, status, body) -> None:
    responses = document["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path} answered {status}, which the document does not list"
    content = responses[str(status)].get("content")
    if content is None:
        assert not body
        return
    schema = {**content["application/json"]["schema"], "components": document["components"]}
    OAS31Validator(schema).validate(body)


def test_real_answers_conform_to_the_document(app, document):
    client = app.test_client()
    calls = [
        ("get", "/healthz", "/healthz", None, 200),
        ("get", "/readyz", "/readyz", None, 200),
        ("get", "/v1/models", "/v1/models", None, 200),
        ("get", "/v1/models/{name}", "/v1/models/pos", None, 200),
        ("get", "/v1/models/{name}", "/v1/models/nope", None, 404),
        ("post", "/v1/models/{name}:tag", "/v1/models/pos:tag", {"sentences": [["The", "dog", "barks", "."]]}, 200),
        ("post", "/v1/models/{name}:tag", "/v1/models/pos:tag", {"texts": ["It isn't."], "top_k": 2}, 200),
        ("post", "/v1/models/{name}:tag", "/v1/models/pos:tag?version=1", {"sentences": [["a"]]}, 200),
        ("post", "/v1/models/{name}:tag", "/v1/models/pos:tag?version=7", {"sentences": [["a"]]}, 404),
        ("post", "/v1/models/{name}:tag", "/v1/models/pos:tag", {"sentences": [[1]]}, 400),
        ("post", "/v1/models/{name}:tag", "/v1/models/pos:tag", {"sentences": [["x" * 5000]]}, 413),
        ("post", "/v1/models/{name}:tag", "/v1/models/slots:tag", {"texts": ["A table in San Jose."], "service": "Restaurants_1"}, 200),
        ("post", "/v1/models/{name}:tag", "/v1/models/slots:tag", {"texts": ["A table in San Jose."], "service": "x"}, 404),
        ("post", "/v1/models/{name}:tag", "/v1/models/slots:tag", {"sentences": [["San", "Jose"]]}, 200),
        ("post", "/v1/dialogs", "/v1/dialogs", {"model": "dialog-action"}, 201),
        ("post", "/v1/dialogs", "/v1/dialogs", {"model": "dialog-action", "slots": "slots"}, 201),
        ("post", "/v1/dialogs", "/v1/dialogs", {"model": "dialog-action", "slots": "pos"}, 400),
        ("post", "/v1/dialogs", "/v1/dialogs", {"model": "nope"}, 404),
    ]
    for method, path, url, body, status in calls:
        response = client.open(url, method=method.upper(), json=body)
        assert response.status_code == status, (url, response.json)
        conforms(document, path, method, status, response.json)
    session = client.post("/v1/dialogs", json={"model": "dialog-act"}).json["session_id"]
    action_session = client.post("/v1/dialogs", json={"model": "dialog-action", "slots": "slots"}).json["session_id"]
    for method, path, url, body, status in [
        ("post", "/v1/dialogs/{session_id}/turns", f"/v1/dialogs/{session}/turns", {"text": "hi there", "speaker": "A"}, 200),
        ("post", "/v1/dialogs/{session_id}/turns", f"/v1/dialogs/{action_session}/turns",
         {"text": "a table for two in San Jose", "service": "Restaurants_1"}, 200),
        ("post", "/v1/dialogs/{session_id}/turns", f"/v1/dialogs/{session}/turns", {"text": 3}, 400),
        ("get", "/v1/dialogs/{session_id}", f"/v1/dialogs/{session}", None, 200),
        ("post", "/v1/dialogs/{session_id}/reset", f"/v1/dialogs/{session}/reset", None, 200),
        ("delete", "/v1/dialogs/{session_id}", f"/v1/dialogs/{session}", None, 204),
        ("get", "/v1/dialogs/{session_id}", f"/v1/dialogs/{session}", None, 404),
    ]:
        response = client.open(url, method=method.upper(), json=body)
        assert response.status_code == status, (url, response.json)
        conforms(document, path, method, status, response.get_json(silent=True))


def test_the_check_rejects_an_answer_of_another_shape(document):
    from jsonschema.exceptions import ValidationError

    with pytest.raises(ValidationError):
        conforms(document, "/v1/models/{name}", "get", 404, {"error": "not found"})
    with pytest.raises(ValidationError):  # a tag response without its tags
        conforms(document, "/v1/models/{name}:tag", "post", 200,
                 {"model": {"name": "pos", "version": 1}, "results": [{"tokens": ["a"], "scores": [1.0]}]})


def test_interactive_docs_pages_read_the_document(app):
    client = app.test_client()
    assert client.get("/docs/").status_code == 302
    for ui in ("swagger", "redoc"):
        page = client.get(f"/docs/{ui}/")
        assert page.status_code == 200 and b"/openapi.json" in page.data
    assert client.get("/docs/nope/").json["error"]["code"] == "not_found"


def test_docs_pages_and_everything_they_load_are_served_here(app):
    """/docs/ and its three pages work offline: every script, style sheet and icon they name is a path on this
    server that answers 200, no page the app serves names another host, and the pages forbid the browser to
    fetch from one (Content-Security-Policy)."""
    import re

    client = app.test_client()
    assert client.get("/docs/").headers["Location"].endswith("/docs/swagger/")
    pages = {"/": None, "/docs/swagger/": "swagger-ui-bundle.js", "/docs/redoc/": "redoc.standalone.js",
             "/docs/scalar/": "scalar.standalone.js"}
    for page, bundle in pages.items():
        response = client.get(page)
        assert response.status_code == 200 and response.mimetype == "text/html"
        html = response.get_data(as_text=True)
        assert not re.search(r"(?:https?:)?//[\w.-]+", html.replace('href="/', "").replace('src="/', "")), page
        references = re.findall(r'(?:src|href)="([^"]+)"', html)
        if bundle:
            assert any(ref.endswith(bundle) for ref in references), (page, references)
            policy = response.headers["Content-Security-Policy"]
            assert "default-src 'self'" in policy and "connect-src 'self'" in policy
        for reference in references:
            if reference.startswith("data:") or reference.startswith("#"):
                continue
            assert reference.startswith("/"), (page, reference)
            asset = client.get(reference, follow_redirects=True)
            assert asset.status_code == 200 and len(asset.get_data()) > 0, (page, reference)
    for static in ("/static/app.js", "/static/style.css"):
        assert not re.search(r"https?://", client.get(static).get_data(as_text=True)), static
    assert client.get("/docs/redoc/assets/../../../../etc/passwd").status_code == 404
    assert client.get("/docs/elements/").status_code == 404
