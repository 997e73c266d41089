"""Fuzzing a real gunicorn (the shipped models) from its own ``/openapi.json`` with Schemathesis: every
operation, schema-valid and schema-violating requests (Schemathesis's positive and negative modes); no 5xx, and every answer (status, content type,
headers, body) conforms to what the document says."""

from __future__ import annotations

import collections
import json
import itertools
import os

import pytest
import schemathesis
from schemathesis.checks import positive_data_acceptance
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from reliability import record
from test_gunicorn import REPO, serve_shipped_models

EXAMPLES = int(os.environ.get("SEQTAG_FUZZ_EXAMPLES", "40"))  # per operation; raise it for a longer run
SHIPPED = sorted(path.name for path in (REPO / "models").iterdir() if path.is_dir())
DIALOG_MODELS = [name for name in SHIPPED if name.startswith("dialog-")]
TAGGERS = [name for name in SHIPPED if name not in DIALOG_MODELS]
# Span models take a ``service`` (the document says so); the others answer 400 to one, asserted in test_span_api.
SPAN_MODELS = {name for name in TAGGERS
               if any(json.loads((path / "metadata.json").read_text()).get("task") == "spans"
                      for path in (REPO / "models" / name).iterdir() if (path / "metadata.json").is_file())}


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    for base, _, process in serve_shipped_models(tmp, SEQTAG_THREADS="8", SEQTAG_KEEP_VERSIONS="1",
                                                     SEQTAG_KEEP_DIALOG_VERSIONS="1"):
        yield base, process
    text = (tmp / "gunicorn.log").read_text()
    assert "Traceback" not in text, text[-3000:]  # nothing failed inside the server either


def test_every_operation_conforms(fuzzed_server):
    """Schemathesis's own strategies per operation, driven by Hypothesis here (its pytest plugin does not
    run under pytest 9); ``call_and_validate`` runs all its checks on each answer."""
    from hypothesis import given

    base, process = fuzzed_server
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 11  # every route the document lists

    modes = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
    statuses: collections.Counter = collections.Counter()
    for operation, mode in itertools.product(operations, modes):
        if mode is schemathesis.GenerationMode.NEGATIVE and not (len(operation.body) or len(operation.query)):
            continue  # nothing to break: a path parameter is any string
        # Random model names mostly meet 404; most cases name a shipped model of the kind the route takes
        # instead, so that the generated sentences, tokens, turns and versions reach the models themselves.
        names = TAGGERS if operation.path.endswith(":tag") else DIALOG_MODELS if operation.path == "/v1/dialogs" else SHIPPED

        # (Schema-violating cases are left as generated: the substitution could make them valid.)
        names = names if mode is schemathesis.GenerationMode.POSITIVE else []

        @given(case=operation.as_strategy(generation_mode=mode), model=st.sampled_from(names + [None]))
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case, model):
            if model is not None and "name" in (case.path_parameters or {}):
                case.path_parameters["name"] = model
            if model is not None and isinstance(case.body, dict) and "model" in case.body:
                case.body["model"] = model
            if (model is not None and operation.path.endswith(":tag") and model not in SPAN_MODELS
                    and isinstance(case.body, dict)):
                case.body.pop("service", None)  # a schema-valid field, for the models of another kind
            if model in SPAN_MODELS and isinstance(case.body, dict) and case.body.get("service") is None:
                # The shipped span model reads schemas: it tags the turns of a service (none: 400 service_required,
                # a rule per model the document cannot state); a generated name is an unknown service (404).
                case.body["service"] = "Restaurants_1"
            excluded = []
            if operation.path == "/v1/services/{service_name}" and operation.method.upper() == "PUT":
                # JSON Schema cannot say "service_name equals the URL's", "unique slot names" or "required slots
                # name slots of this schema": schema-valid bodies that break them are rightly refused (400 with the
                # field path). The name is matched to the URL so that many reach the rest of the validation.
                if isinstance(case.body, dict) and isinstance(case.body.get("service_name"), str):
                    case.path_parameters["service_name"] = case.body["service_name"]
                excluded = [positive_data_acceptance]
            response = case.call_and_validate(timeout=30, excluded_checks=excluded)
            statuses[response.status_code // 100] += 1
            assert process.poll() is None  # the server is still up

        fuzz()
    record("fuzz", 10, "Schemathesis from the live /openapi.json: schema-valid and schema-violating requests to every "
           "operation; every answer checked against the document", f"{len(operations)} operations, "
           f"{sum(statuses.values()):,} requests ({EXAMPLES} + {EXAMPLES} examples per operation)",
           "0 5xx, 0 answers off the document, no traceback in the log",
           ", ".join(f"{count:,} {kind}xx" for kind, count in sorted(statuses.items())))


def test_bad_json_of_any_depth_size_or_encoding_on_the_real_server(fuzzed_server):
    """The bad bodies of ``tests/test_bad_json.py`` (depths to 100,000, long strings, odd encodings) sent to
    every JSON route of the real gunicorn: a 4xx in the error shape each, the worker alive, no traceback."""
    import http.client

    from test_bad_json import ROUTES, bad_bodies

    base, process = fuzzed_server
    port = int(base.rsplit(":", 1)[1])

    def post(url: str, body: bytes) -> tuple[int, object]:
        # A connection per request: after a 413 gunicorn drains at most 64 KiB of the unread body and then
        # closes the connection, so a client must not reuse it.
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            connection.request("POST", url, body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            return response.status, json.loads(response.read() or b"null")
        finally:
            connection.close()

    session = post("/v1/dialogs", b'{"model": "dialog-act"}')[1]["session_id"]
    sent = 0
    for name, (url, field, _) in sorted(ROUTES.items()):
        for case, body, expect in bad_bodies(field):
            status, answer = post(url.format(session=session), body)
            assert status < 500, (name, case, answer)
            if expect is not None:
                assert answer["error"]["code"] == expect, (name, case, answer)
            sent += 1
    assert sent > 300 and process.poll() is None
