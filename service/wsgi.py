"""WSGI entry point for gunicorn: ``service.wsgi:app`` (settings from the environment)."""

import atexit
import logging

from service import create_app
from service.request_log import BatchedLineHandler

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s")
# Request lines are JSON already: written bare, one per line, for log shippers to parse. A request thread only
# appends its line; a writer thread writes what gathered every 50 ms (service.request_log.BatchedLineHandler), so
# no request waits on stderr, on a handler's lock, or wakes a thread.
_requests = BatchedLineHandler()
atexit.register(_requests.close)  # writes what is still gathered
logging.getLogger("seqtag.requests").addHandler(_requests)
logging.getLogger("seqtag.requests").propagate = False
app = create_app()
if app.extensions["seqtag.registry"].fleet is not None:  # a worker that stops leaves the fleet at once
    atexit.register(app.extensions["seqtag.registry"].fleet.withdraw)
