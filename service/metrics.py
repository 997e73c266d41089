"""Prometheus metrics at ``GET /metrics`` (``prometheus-client``).

Under gunicorn each worker is a process: ``service/gunicorn_conf.py`` sets ``PROMETHEUS_MULTIPROC_DIR``
before any worker starts, each worker writes its samples there, and a scrape of any worker sums
counters and histograms over all of them (gauges of model versions are kept per worker, labelled
``pid``). Without that variable (tests, ``flask run``) the process's own registry is served.

Route labels are URL rules (``/v1/models/<model_name:name>:tag``), never raw paths, so the number of
series stays bounded whatever clients send.
"""

from __future__ import annotations

import os
import time

from flask import Flask, Response, current_app, g, request
from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest, multiprocess)

from service.openapi import documented

REQUESTS = Counter("seqtag_http_requests_total", "HTTP requests answered, by route, method and status",
                   ["route", "method", "status"])
LATENCY = Histogram("seqtag_http_request_duration_seconds", "Time from request to response, by route and method",
                    ["route", "method"],
                    buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
BATCH_SIZE = Histogram("seqtag_model_batch_size", "Sentences (taggers) or turns (dialog models) per model call",
                       ["model"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
VERSION_LOADED = Gauge("seqtag_model_version_loaded", "2: the serving version, 1: loaded (pinned requests), 0: unloaded",
                       ["model", "version"], multiprocess_mode="liveall")
LOAD_FAILURES = Counter("seqtag_model_load_failures_total", "Model versions rejected: failed to load or to warm up",
                        ["model"])
FLEET_KEY_CONFIGS = Gauge("seqtag_fleet_api_key_configs",
                          "Different API key configurations among the live workers of all hosts sharing this Redis, "
                          "at the last scrape: 1 when they agree", multiprocess_mode="mostrecent")
LIVE_SESSIONS = Gauge("seqtag_dialog_sessions_live", "Dialog sessions alive in the session store, at the last scrape",
                      multiprocess_mode="mostrecent")


def observe_batch(model: str, size: int) -> None:
    BATCH_SIZE.labels(model).observe(size)


def set_loaded_versions(model: str, loaded: list[int], serving: int | None, unloaded: list[int]) -> None:
    # Unloaded versions go to 0 rather than away: in multiprocess mode a removed series would live on in
    # the worker's file anyway.
    for version in unloaded:
        VERSION_LOADED.labels(model, str(version)).set(0)
    for version in loaded:
        VERSION_LOADED.labels(model, str(version)).set(2 if version == serving else 1)


def _start_timer() -> None:
    g.seqtag_started = time.perf_counter()


def route_label() -> str:
    """The request's URL rule (bounded), or ``<unmatched>``; shared with the request log."""
    return request.url_rule.rule if request.url_rule is not None else "<unmatched>"


def elapsed_seconds() -> float | None:
    """Seconds since the request began (None if it was refused before ``before_request`` ran)."""
    started = g.get("seqtag_started")
    return None if started is None else time.perf_counter() - started


def _count(response):
    route = route_label()
    REQUESTS.labels(route, request.method, str(response.status_code)).inc()
    elapsed = elapsed_seconds()
    if elapsed is not None:
        LATENCY.labels(route, request.method).observe(elapsed)
    return response


@documented(tags=("health",), HTTP_200=None)
def scrape():
    """Prometheus text format: requests, latency, batch sizes, loaded versions, load failures, sessions, the
    fleet's API key configurations."""
    sessions = current_app.extensions.get("seqtag.sessions")
    if sessions is not None:
        try:
            LIVE_SESSIONS.set(sessions.count())
        except Exception:  # the store is down: the scrape still answers, the gauge keeps its last value
            pass
    fleet = getattr(current_app.extensions.get("seqtag.registry"), "fleet", None)
    if fleet is not None:
        configs = fleet.api_key_configs()
        if configs is not None:  # Redis away: the gauge keeps its last value
            FLEET_KEY_CONFIGS.set(configs)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    app.before_request(_start_timer)
    app.after_request(_count)
    app.add_url_rule("/metrics", endpoint="metrics", view_func=scrape, methods=["GET"])
