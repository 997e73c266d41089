"""One structured (JSON) log line per request, with a request id echoed in the ``X-Request-Id`` header.

A client's own ``X-Request-Id`` is kept when it is a plain token (letters, digits, ``._-``, at most 64),
so a call can be followed from the client's logs into the service's; otherwise a new id is made. Lines
go to the ``seqtag.requests`` logger (``service.wsgi`` writes them to stderr under gunicorn).
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from flask import Flask, g, request

from service.metrics import elapsed_seconds, route_label

logger = logging.getLogger("seqtag.requests")

REQUEST_ID_HEADER = "X-Request-Id"
_CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _begin() -> None:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = given if _CLIENT_ID.fullmatch(given) else uuid.uuid4().hex


def _finish(response):
    request_id = g.get("request_id") or uuid.uuid4().hex  # a request refused before _begin ran
    response.headers[REQUEST_ID_HEADER] = request_id
    if logger.isEnabledFor(logging.INFO):
        elapsed = elapsed_seconds()  # the metrics' clock: one timer per request
        logger.info(json.dumps({
            "time": round(time.time(), 3),
            "request_id": request_id,
            "method": request.method,
            "path": request.path[:200],
            "route": route_label(),
            "status": response.status_code,
            "ms": round(1000 * elapsed, 2) if elapsed is not None else None,
            "bytes_in": request.content_length or 0,
            "bytes_out": response.content_length,
            "remote": request.remote_addr,
        }, ensure_ascii=False))
    return response


def init_app(app: Flask) -> None:
    app.before_request(_begin)
    app.after_request(_finish)
