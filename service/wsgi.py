"""WSGI entry point for gunicorn: ``service.wsgi:app`` (settings from the environment)."""

import atexit
import logging
import logging.handlers
import queue

from service import create_app

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s")
# Request lines are JSON already: written bare, one per line, for log shippers to parse. A request thread
# only queues its line; one listener thread writes them, so no request waits on stderr or on the other
# threads' writes (with 32 threads, the handler's lock was where they queued up).
_requests = logging.StreamHandler()
_requests.setFormatter(logging.Formatter("%(message)s"))
_lines: queue.SimpleQueue = queue.SimpleQueue()
_writer = logging.handlers.QueueListener(_lines, _requests)
_writer.start()
atexit.register(_writer.stop)  # writes what is still queued
logging.getLogger("seqtag.requests").addHandler(logging.handlers.QueueHandler(_lines))
logging.getLogger("seqtag.requests").propagate = False
app = create_app()
