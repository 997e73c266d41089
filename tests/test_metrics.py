"""``/metrics`` in one process (Flask's test client): requests by route and status, latency, batch sizes,
loaded versions, load failures and live sessions move as the service works. The multiprocess mode under
gunicorn is tested in ``test_gunicorn.py``."""

import shutil

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service import create_app
from test_registry import add_broken_version

TAG_ROUTE = "/v1/models/<model_name:name>:tag"


def scrape(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.content_type.startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.data.decode()) for s in family.samples}


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def app(tmp_path, random_tagger_dir, random_dialog_dirs):
    models = tmp_path / "models"
    shutil.copytree(random_tagger_dir, models / "pos" / "1")
    shutil.copytree(random_dialog_dirs["dialog-act"], models / "dialog-act" / "1")
    app = create_app({"models_dir": str(models), "poll_interval_seconds": 0})
    yield app
    app.extensions["seqtag.registry"].close()


def test_requests_latency_and_batches_are_counted(app):
    client = app.test_client()
    before = scrape(client)
    for _ in range(3):
        assert client.post("/v1/models/pos:tag", json={"sentences": [["a", "b"], ["c"]]}).status_code == 200
    assert client.post("/v1/models/pos:tag", json={"sentences": "no"}).status_code == 400
    assert client.get("/v1/no/such/route").status_code == 404
    after = scrape(client)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("seqtag_http_requests_total", route=TAG_ROUTE, method="POST", status="200") == 3
    assert delta("seqtag_http_requests_total", route=TAG_ROUTE, method="POST", status="400") == 1
    assert delta("seqtag_http_requests_total", route="<unmatched>", method="GET", status="404") == 1  # not the raw path
    assert delta("seqtag_http_request_duration_seconds_count", route=TAG_ROUTE, method="POST") == 4
    assert delta("seqtag_http_request_duration_seconds_sum", route=TAG_ROUTE, method="POST") > 0
    # Two sentences a request, each request its own model call here (nothing runs alongside).
    assert delta("seqtag_model_batch_size_count", model="pos") == 3
    assert delta("seqtag_model_batch_size_sum", model="pos") == 6
    assert value(after, "seqtag_model_version_loaded", model="pos", version="1") == 2  # serving


def test_sessions_versions_and_load_failures(app, tmp_path, random_tagger_dir):
    client = app.test_client()
    before = scrape(client)
    sessions = [client.post("/v1/dialogs", json={"model": "dialog-act"}).json["session_id"] for _ in range(3)]
    assert value(scrape(client), "seqtag_dialog_sessions_live") == 3
    client.delete(f"/v1/dialogs/{sessions[0]}")
    assert value(scrape(client), "seqtag_dialog_sessions_live") == 2

    registry = app.extensions["seqtag.registry"]
    add_broken_version(tmp_path / "models" / "pos", 2, random_tagger_dir)
    registry.refresh()
    after = scrape(client)
    assert value(after, "seqtag_model_load_failures_total", model="pos") - \
        value(before, "seqtag_model_load_failures_total", model="pos") == 1
    assert value(after, "seqtag_model_version_loaded", model="pos", version="1") == 2  # the old one serves on


def test_one_json_line_per_request_with_its_id(app, caplog):
    import json
    import logging

    client = app.test_client()
    with caplog.at_level(logging.INFO, logger="seqtag.requests"):
        mine = client.post("/v1/models/pos:tag", json={"sentences": [["a"]]}, headers={"X-Request-Id": "client-42"})
        made = client.post("/v1/models/pos:tag", json={"sentences": 5}, headers={"X-Request-Id": "bad id {}"})
    assert mine.headers["X-Request-Id"] == "client-42"
    assert made.status_code == 400 and len(made.headers["X-Request-Id"]) == 32  # not the client's unsafe one
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "seqtag.requests"]
    assert [(line["request_id"], line["status"], line["route"]) for line in lines] == [
        ("client-42", 200, TAG_ROUTE), (made.headers["X-Request-Id"], 400, TAG_ROUTE)]
    assert all(line["ms"] > 0 and line["method"] == "POST" for line in lines)


def test_request_lines_are_written_in_batches_in_order_and_none_lost():
    """The request log's handler under gunicorn: threads only append; the writer thread's batches keep each
    thread's lines in order, and closing writes what is still gathered."""
    import io
    import logging
    import threading

    from service.request_log import BatchedLineHandler

    stream = io.StringIO()
    handler = BatchedLineHandler(stream, interval=0.002)
    logger = logging.getLogger("seqtag.test-batched")
    logger.propagate, logger.level = False, logging.INFO
    logger.addHandler(handler)

    def emit(thread: int):
        for i in range(400):
            logger.info("%d %d", thread, i)

    threads = [threading.Thread(target=emit, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    handler.close()
    logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 8 * 400
    for thread in range(8):
        assert [int(line.split()[1]) for line in lines if line.split()[0] == str(thread)] == list(range(400))
