"""Fuzzing a real gunicorn (the shipped models) from its own ``/openapi.json`` with Schemathesis: every
operation, schema-valid and schema-violating requests (Schemathesis's positive and negative modes); no 5xx, and every answer (status, content type,
headers, body) conforms to what the document says."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from test_gunicorn import REPO, call, free_port, wait_until

EXAMPLES = int(os.environ.get("SEQTAG_FUZZ_EXAMPLES", "40"))  # per operation; raise it for a longer run


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    env = {**os.environ, "PORT": str(port), "SEQTAG_HOST": "127.0.0.1", "SEQTAG_MODELS_DIR": str(REPO / "models"),
           "SEQTAG_POLL_INTERVAL_SECONDS": "0", "SEQTAG_THREADS": "8", "PROMETHEUS_MULTIPROC_DIR": str(tmp)}
    log = open(tmp / "gunicorn.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "service/gunicorn_conf.py"], cwd=REPO, env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: call(port, "/readyz")[0] == 200, 180, "gunicorn to be ready", process)
        yield f"http://127.0.0.1:{port}", process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        log.close()
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
    for operation, mode in itertools.product(operations, modes):
        if mode is schemathesis.GenerationMode.NEGATIVE and not (len(operation.body) or len(operation.query)):
            continue  # nothing to break: a path parameter is any string
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case):
            case.call_and_validate(timeout=30)
            assert process.poll() is None  # the server is still up

        fuzz()
