"""WSGI entry point for gunicorn: ``service.wsgi:app`` (settings from the environment)."""

import logging

from service import create_app

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s")
# Request lines are JSON already: written bare, one per line, for log shippers to parse.
_requests = logging.StreamHandler()
_requests.setFormatter(logging.Formatter("%(message)s"))
logging.getLogger("seqtag.requests").addHandler(_requests)
logging.getLogger("seqtag.requests").propagate = False
app = create_app()
