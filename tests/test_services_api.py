"""``/v1/services``: registering SGD service schemas at run time (``service.services``, ``service.routes.services``).

Apps here serve no model (an empty models directory): the routes only need the catalog, and a stand-in registry
plays the loaded model versions that ship ``schemas.json``. Every worker (a second app on the same directory or
Redis) and a restarted server (a new app) must see a registration.
"""

from __future__ import annotations

import copy
import json
import os
import threading
import time
from pathlib import Path

import pytest

from conftest import POTTERY_SCHEMA

from conftest import start_redis
from service import create_app
from service.registry import ModelLookupError
from service.services import (DirectoryServiceStore, ServiceCatalog, UnknownService, shipped_schemas,
                             unknown_service_error)
from service.settings import ServiceSettings
from training.common.service_schema import MAX_DESCRIPTION_CHARS, MAX_SLOTS, parse_schema, schema_digest

POTTERY = POTTERY_SCHEMA  # (conftest)
KEY = "ops:" + "k" * 20


def pottery(name: str = "Pottery_1", **changes) -> dict:
    schema = copy.deepcopy(POTTERY)
    schema.update(service_name=name, **changes)
    return schema


def new_app(tmp: Path, **settings):
    (tmp / "models").mkdir(exist_ok=True)
    return create_app({"models_dir": str(tmp / "models"), "poll_interval_seconds": 0, "dialog_sessions": False,
                       "services_dir": str(tmp / "services"), **settings})


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    return new_app(tmp_path_factory.mktemp("services-app"))


@pytest.fixture
def client(app):
    yield app.test_client()
    for path in Path(app.extensions["seqtag.settings"].services_dir).glob("*"):  # each test starts with none
        path.unlink()


def test_register_replace_show_list_and_delete(app, client):
    answer = client.put("/v1/services/Pottery_1", json=POTTERY)
    assert answer.status_code == 201
    digest = schema_digest(parse_schema(POTTERY))
    assert answer.json == {"service_name": "Pottery_1", "digest": digest, "slots": ["kiln_temperature", "glaze_color"],
                           "intents": ["BookFiring"], "registered": True}
    directory = Path(app.extensions["seqtag.settings"].services_dir)
    assert sorted(p.name for p in directory.iterdir()) == ["Pottery_1.json"]  # no temporary file left behind

    assert client.put("/v1/services/Pottery_1", json=POTTERY).status_code == 200  # the same again: replaced
    changed = client.put("/v1/services/Pottery_1", json=pottery(description="Fire pots in a kiln"))
    assert changed.status_code == 200 and changed.json["digest"] != digest

    listing = client.get("/v1/services").json["services"]
    assert listing == [{"service_name": "Pottery_1", "description": "Fire pots in a kiln",
                        "slots": ["kiln_temperature", "glaze_color"], "intents": ["BookFiring"],
                        "digest": changed.json["digest"], "source": "registered", "models": []}]
    shown = client.get("/v1/services/Pottery_1").json
    assert shown == {**pottery(description="Fire pots in a kiln"), "digest": changed.json["digest"],
                     "source": "registered", "models": []}

    assert client.delete("/v1/services/Pottery_1").status_code == 204
    assert list(directory.iterdir()) == []
    for method in ("get", "delete"):
        gone = client.open("/v1/services/Pottery_1", method=method.upper())
        assert gone.status_code == 404 and gone.json["error"] == {
            "code": "unknown_service",
            "message": "no service 'Pottery_1': register its schema with PUT /v1/services/Pottery_1 "
                       "(an SGD schema object)"}
    assert client.get("/v1/services").json == {"services": []}


def _missing_description():
    schema = pottery()
    del schema["slots"][1]["description"]
    return schema


def _twice():
    schema = pottery()
    schema["slots"][1]["name"] = "kiln_temperature"
    schema["intents"][0].update(optional_slots={}, result_slots=[])
    return schema


def _wrong_type():
    schema = pottery()
    schema["slots"][0]["is_categorical"] = "yes"
    return schema


BAD_SCHEMAS = [
    (_missing_description(), 400, "slots[1].description: field required"),
    (_wrong_type(), 400, "slots[0].is_categorical: input should be a valid boolean"),
    (_twice(), 400, "slots[1].name: the slot 'kiln_temperature' is given twice"),
    (pottery(slots=[{"name": f"s{i}", "description": "d", "is_categorical": False} for i in range(10_000)]), 400,
     f"slots: list should have at most {MAX_SLOTS} items after validation, not 10000"),
    (pottery(description="x" * 1_000_000), 400, f"description: string should have at most {MAX_DESCRIPTION_CHARS} "
                                                "characters"),
    (pottery(description="x" * (2 << 20)), 413, None),  # beyond max_body_bytes: never parsed
    (pottery(owner="me"), 400, "owner: extra inputs are not permitted"),
    ([POTTERY], 400, "should be a JSON object"),
    (pottery("Kiln_2"), 400, "service_name: 'Kiln_2' is not 'Pottery_1', the name in the URL"),
]


@pytest.mark.parametrize("body, status, message", BAD_SCHEMAS)
def test_invalid_schemas_are_refused_with_the_field_path(client, body, status, message):
    answer = client.put("/v1/services/Pottery_1", json=body)
    assert answer.status_code == status, answer.json
    if message is not None:
        assert answer.json["error"] == {"code": "invalid_schema", "message": message}
    else:
        assert answer.json["error"]["code"] == "payload_too_large"
    assert client.get("/healthz").status_code == 200  # the worker is fine
    assert client.get("/v1/services/Pottery_1").status_code == 404  # and nothing was stored


def test_bad_names_and_bodies(client):
    bad_name = client.put("/v1/services/pottery-1", json=pottery("pottery-1"))
    assert bad_name.status_code == 400 and bad_name.json["error"]["code"] == "invalid_schema"
    assert "the service name in the URL" in bad_name.json["error"]["message"]
    assert client.put("/v1/services/Pottery_1", data="{", content_type="application/json").json["error"]["code"] \
        == "invalid_json"
    assert client.put("/v1/services/Pottery_1", data="x").status_code == 415
    unknown = client.get("/v1/services/no-such thing")
    assert unknown.status_code == 404 and "a service name is a letter" in unknown.json["error"]["message"]
    assert client.delete("/v1/services/..").status_code == 404


def test_the_model_side_check_runs_before_storing(app, client, monkeypatch):
    seen = []

    def check(schema):
        seen.append(schema.service_name)
        if schema.service_name == "Kiln_2":
            raise ValueError("slots[0].description: the model cannot read it")

    monkeypatch.setitem(app.extensions, "seqtag.schema_check", check)
    refused = client.put("/v1/services/Kiln_2", json=pottery("Kiln_2"))
    assert refused.status_code == 400 and refused.json["error"] == {
        "code": "invalid_schema", "message": "slots[0].description: the model cannot read it"}
    assert client.get("/v1/services/Kiln_2").status_code == 404
    assert client.put("/v1/services/Pottery_1", json=POTTERY).status_code == 201
    assert seen == ["Kiln_2", "Pottery_1"]


def test_every_worker_and_a_restarted_server_see_registrations(tmp_path, caplog):
    first, second = new_app(tmp_path).test_client(), new_app(tmp_path).test_client()  # two workers, one directory
    assert second.get("/v1/services/Pottery_1").status_code == 404  # read (and cached) before it exists
    assert first.put("/v1/services/Pottery_1", json=POTTERY).status_code == 201
    assert second.get("/v1/services/Pottery_1").json["description"] == POTTERY["description"]
    # Replaced at once by the other worker, by a schema of the same size: the cached one must not be served.
    same_size = pottery(description=POTTERY["description"].upper())
    assert second.put("/v1/services/Pottery_1", json=same_size).status_code == 200
    assert first.get("/v1/services/Pottery_1").json["description"] == same_size["description"]
    assert [s["service_name"] for s in first.get("/v1/services").json["services"]] == ["Pottery_1"]
    assert second.delete("/v1/services/Pottery_1").status_code == 204
    assert first.get("/v1/services/Pottery_1").status_code == 404
    assert first.get("/v1/services").json == {"services": []}

    # A file written long ago is cached by its (mtime, size, inode); a replacement is seen all the same.
    assert first.put("/v1/services/Kiln_2", json=pottery("Kiln_2")).status_code == 201
    old = time.time() - 60
    os.utime(tmp_path / "services" / "Kiln_2.json", (old, old))
    os.utime(tmp_path / "services", (old, old))
    assert second.get("/v1/services/Kiln_2").json["description"] == POTTERY["description"]
    assert [s["service_name"] for s in second.get("/v1/services").json["services"]] == ["Kiln_2"]
    assert first.put("/v1/services/Kiln_2", json=pottery("Kiln_2", description="Kilns")).status_code == 200
    assert first.put("/v1/services/Pottery_1", json=POTTERY).status_code == 201
    assert second.get("/v1/services/Kiln_2").json["description"] == "Kilns"
    assert [s["service_name"] for s in second.get("/v1/services").json["services"]] == ["Kiln_2", "Pottery_1"]
    assert first.delete("/v1/services/Pottery_1").status_code == 204

    restarted = new_app(tmp_path).test_client()
    assert restarted.get("/v1/services/Kiln_2").json["source"] == "registered"

    # A file broken by hand is ignored (and logged), never a 500.
    (tmp_path / "services" / "Broken_1.json").write_text("{not json", encoding="utf-8")
    assert restarted.get("/v1/services/Broken_1").status_code == 404
    assert [s["service_name"] for s in restarted.get("/v1/services").json["services"]] == ["Kiln_2"]
    assert "Broken_1.json" in caplog.text


def test_a_directory_that_cannot_be_used_answers_503(app, client, monkeypatch, tmp_path):
    (tmp_path / "file").write_text("not a directory")
    unusable = DirectoryServiceStore(tmp_path / "file" / "services")  # under a file: cannot be made
    monkeypatch.setattr(app.extensions["seqtag.services"], "store", unusable)
    for method, url, body in [("PUT", "/v1/services/Pottery_1", POTTERY), ("GET", "/v1/services", None)]:
        answer = client.open(url, method=method, json=body)
        assert answer.status_code == 503 and answer.json["error"]["code"] == "services_unavailable"
        assert str(tmp_path) not in answer.json["error"]["message"]  # no path of the host in an answer
    assert list(tmp_path.iterdir()) == [tmp_path / "file"]


class FakeVersion:
    def __init__(self, name: str, directory: Path):
        self.name, self.version, self.directory = name, 1, directory


class FakeRegistry:
    """The model registry as the services routes read it: names, and each serving version's directory."""

    def __init__(self, directories: dict[str, Path | None]):
        self.directories = directories

    def names(self) -> list[str]:
        return sorted(self.directories)

    def get(self, name: str, version: int | None = None) -> FakeVersion:
        if self.directories[name] is None:
            raise ModelLookupError("model_unavailable", f"model {name!r} has no version that loaded")
        return FakeVersion(name, self.directories[name])


def test_shipped_services(app, client, monkeypatch, tmp_path):
    ships, broken = tmp_path / "slots" / "1", tmp_path / "broken" / "1"
    ships.mkdir(parents=True), broken.mkdir(parents=True)
    (ships / "schemas.json").write_text(json.dumps([pottery("Kiln_2"), pottery("Pottery_1")]), encoding="utf-8")
    (broken / "schemas.json").write_text(json.dumps([{"service_name": "Oops_1"}]), encoding="utf-8")
    registry = FakeRegistry({"slots": ships, "broken": broken, "loading": None, "pos": tmp_path})
    monkeypatch.setitem(app.extensions, "seqtag.registry", registry)

    listing = client.get("/v1/services").json["services"]
    assert [(s["service_name"], s["source"], s["models"]) for s in listing] == [
        ("Kiln_2", "shipped", ["slots"]), ("Pottery_1", "shipped", ["slots"])]
    assert client.get("/v1/services/Kiln_2").json["source"] == "shipped"
    refused = client.delete("/v1/services/Kiln_2")
    assert refused.status_code == 409 and refused.json["error"]["code"] == "shipped_service"

    # A registration overrides the shipped schema of its name; deleting it brings the shipped one back.
    assert client.put("/v1/services/Kiln_2", json=pottery("Kiln_2", description="Mine")).status_code == 201
    shown = client.get("/v1/services/Kiln_2").json
    assert (shown["source"], shown["models"], shown["description"]) == ("registered", ["slots"], "Mine")
    catalog: ServiceCatalog = app.extensions["seqtag.services"]
    shipped = shipped_schemas(ships)
    assert catalog.lookup("Kiln_2", shipped).description == "Mine"
    assert catalog.lookup("Pottery_1", shipped) == shipped["Pottery_1"]
    with pytest.raises(UnknownService):
        catalog.lookup("Nope_9", shipped)
    assert client.delete("/v1/services/Kiln_2").status_code == 204
    assert client.get("/v1/services/Kiln_2").json["source"] == "shipped"
    assert catalog.lookup("Kiln_2", shipped).description == POTTERY["description"]
    assert shipped_schemas(tmp_path) == {}  # a version that ships none


def test_registrations_in_redis_are_shared_and_survive_a_restart(tmp_path):
    import redis

    process, port = start_redis(tmp_path)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        first = new_app(tmp_path, redis_url=url, redis_timeout_seconds=0.5).test_client()
        second = new_app(tmp_path, redis_url=url, redis_timeout_seconds=0.5).test_client()
        assert second.get("/v1/services/Pottery_1").status_code == 404  # cached: nothing there yet
        assert first.put("/v1/services/Pottery_1", json=POTTERY).status_code == 201
        assert second.get("/v1/services/Pottery_1").json["description"] == POTTERY["description"]
        assert second.put("/v1/services/Pottery_1", json=pottery(description="Changed")).status_code == 200
        assert first.get("/v1/services/Pottery_1").json["description"] == "Changed"
        assert first.put("/v1/services/Kiln_2", json=pottery("Kiln_2")).status_code == 201
        assert second.delete("/v1/services/Pottery_1").status_code == 204
        assert [s["service_name"] for s in first.get("/v1/services").json["services"]] == ["Kiln_2"]
        assert not (tmp_path / "services").exists()  # Redis holds them, not the directory

        raw = redis.Redis(port=port)
        assert set(raw.hkeys("seqtag:services")) == {b"Kiln_2"} and int(raw.get("seqtag:services:generation")) == 4
        raw.close()
        restarted = new_app(tmp_path, redis_url=url, redis_timeout_seconds=0.5).test_client()
        assert restarted.get("/v1/services/Kiln_2").json["source"] == "registered"
    finally:
        process.terminate()
        process.wait(timeout=10)
    # Redis stopped: a read and a write each answer 503 within a few quick retries (each costs ~0.15 s).
    for method, url, body in [("GET", "/v1/services/Kiln_2", None), ("PUT", "/v1/services/Kiln_2", pottery("Kiln_2"))]:
        answer = restarted.open(url, method=method, json=body)
        assert answer.status_code == 503, (method, url, answer.json)
        assert answer.json["error"]["code"] == "services_unavailable" and answer.headers["Retry-After"] == "1"
    assert restarted.get("/healthz").status_code == 200


def test_writes_need_a_key_when_keys_are_configured(tmp_path):
    client = new_app(tmp_path, api_keys=KEY).test_client()
    for method in ("PUT", "DELETE", "GET"):
        answer = client.open("/v1/services/Pottery_1", method=method, json=POTTERY if method == "PUT" else None)
        assert answer.status_code == 401 and answer.json["error"]["code"] == "unauthorized"
    assert not (tmp_path / "services").exists()
    header = {"Authorization": "Bearer " + KEY.split(":")[1]}
    assert client.put("/v1/services/Pottery_1", json=POTTERY, headers=header).status_code == 201
    assert client.delete("/v1/services/Pottery_1", headers=header).status_code == 204


class Encoder:
    """A schema-guided model version as the catalog sees it: ``encode_service`` counted."""

    def __init__(self, name: str = "sgd", version: int = 1):
        self.name, self.version, self.calls = name, version, 0

    def encode_service(self, schema):
        self.calls += 1
        return ("encoded", self.name, self.version, schema.service_name, schema_digest(schema))


def test_encodings_are_computed_once_per_schema_and_model_version(tmp_path):
    catalog = ServiceCatalog.from_settings(ServiceSettings(services_dir=str(tmp_path)))
    catalog.encoding_cache_size = 4
    model, other = Encoder(), Encoder(version=2)
    schema, changed = parse_schema(POTTERY), parse_schema(pottery(description="Changed"))
    assert catalog.encoding(model, schema) == ("encoded", "sgd", 1, "Pottery_1", schema_digest(schema))
    assert catalog.encoding(model, parse_schema(POTTERY)) == catalog.encoding(model, schema) and model.calls == 1
    assert catalog.encoding(model, changed)[4] == schema_digest(changed) and model.calls == 2  # re-registered
    assert catalog.encoding(other, schema)[2] == 2 and other.calls == 1  # another version: its own
    for i in range(4):  # the least recently used go
        catalog.encoding(model, parse_schema(pottery(f"S{i}")))
    catalog.encoding(model, schema)
    assert model.calls == 7

    # Many threads, few entries: every answer is its own key's.
    wrong = []

    def use(k: int) -> None:
        schemas = [parse_schema(pottery(f"T{i}")) for i in range(10)]
        for j in range(200):
            s = schemas[(j + k) % 10]
            if catalog.encoding(model, s)[3] != s.service_name:
                wrong.append(s.service_name)

    threads = [threading.Thread(target=use, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not wrong and len(catalog._encodings) <= 4


def test_the_services_directory_defaults_to_xdg_state():
    assert ServiceSettings.load({}, environ={"XDG_STATE_HOME": "/state"}).services_dir == "/state/seqtag/services"
    assert ServiceSettings.load({}, environ={"XDG_STATE_HOME": "relative", "HOME": "/home/u"}).services_dir \
        == "/home/u/.local/state/seqtag/services"  # a relative XDG_STATE_HOME is ignored, as the spec says
    assert ServiceSettings.load({}, environ={"SEQTAG_SERVICES_DIR": "/srv/s", "XDG_STATE_HOME": "/state"}) \
        .services_dir == "/srv/s"


def test_unknown_service_error_names_the_model_and_how_to_register():
    error = unknown_service_error("Nope_9", model_name="slots")
    assert (error.status, error.code) == (404, "unknown_service")
    assert error.message == ("model 'slots' knows no service 'Nope_9': register its schema with PUT "
                             "/v1/services/Nope_9 (an SGD schema object)")


def test_the_document_describes_the_routes_and_their_answers(app, client):
    from openapi_schema_validator import OAS31Validator
    from openapi_spec_validator import validate

    document = client.get("/openapi.json").json
    validate(document)
    paths = document["paths"]
    assert set(paths["/v1/services/{service_name}"]) == {"put", "get", "delete"} and "get" in paths["/v1/services"]
    put = paths["/v1/services/{service_name}"]["put"]
    assert put["requestBody"]["content"]["application/json"]["schema"]["$ref"].startswith(
        "#/components/schemas/ServiceSchema")

    def conforms(path, method, answer):
        content = paths[path][method]["responses"][str(answer.status_code)].get("content")
        if content is None:
            assert not answer.data
            return
        OAS31Validator({**content["application/json"]["schema"], "components": document["components"]}
                       ).validate(answer.json)

    calls = [("put", "/v1/services/{service_name}", "/v1/services/Pottery_1", POTTERY),
             ("put", "/v1/services/{service_name}", "/v1/services/Pottery_1", POTTERY),
             ("put", "/v1/services/{service_name}", "/v1/services/Pottery_1", _twice()),
             ("get", "/v1/services", "/v1/services", None),
             ("get", "/v1/services/{service_name}", "/v1/services/Pottery_1", None),
             ("delete", "/v1/services/{service_name}", "/v1/services/Pottery_1", None),
             ("get", "/v1/services/{service_name}", "/v1/services/Pottery_1", None)]
    statuses = []
    for method, path, url, body in calls:
        answer = client.open(url, method=method.upper(), json=body)
        statuses.append(answer.status_code)
        conforms(path, method, answer)
    assert statuses == [201, 200, 400, 200, 200, 204, 404]
    # The request schema says what the server checks, so a client (or a fuzzer) reading it knows the limits.
    slot = document["components"]["schemas"]
    assert any(s.get("properties", {}).get("possible_values", {}).get("uniqueItems") for s in slot.values())


def test_bad_schemas_leave_nothing_registered(client):
    """Every bad schema above, then the registry: nothing of them was stored, a good one still registers (the
    reliability page's row)."""
    from reliability import record

    statuses = [client.put("/v1/services/Pottery_1", json=body).status_code for body, _, _ in BAD_SCHEMAS]
    assert statuses == [status for _, status, _ in BAD_SCHEMAS]
    assert client.get("/v1/services/Pottery_1").status_code == 404  # nothing half-registered
    assert client.put("/v1/services/Pottery_1", json=pottery()).status_code in (200, 201)
    assert client.delete("/v1/services/Pottery_1").status_code == 204
    record("bad-schemas", 35, "PUT /v1/services with bad schemas: a missing field, a wrong type, a slot given twice, "
                              "10,000 slots, a 1 MB description, a 2 MB body, an unknown field, a list, a name that "
                              "is not the URL's", f"{len(BAD_SCHEMAS)} requests",
           "nothing stored; the worker answered /healthz after each",
           f"{statuses.count(400)} x 400 invalid_schema with the field path, {statuses.count(413)} x 413")
