"""WSGI entry point for gunicorn: ``service.wsgi:app`` (settings from the environment)."""

import logging

from service import create_app

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s")
app = create_app()
