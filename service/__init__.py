"""seqtag's HTTP service: ``from service import create_app`` builds the Flask app (``service.app``), served by
gunicorn (``service.gunicorn_conf``, ``service.wsgi``; ``seqtag serve``).

Importing the package itself is light: ``create_app`` (and with it Flask, TensorFlow and the models' readers) is
imported on first use, so gunicorn's master, which reads ``service.gunicorn_conf`` and forks the workers, never
loads TensorFlow (which is not fork-safe, and costs seconds and hundreds of MB).
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from service.app import create_app

        return create_app
    raise AttributeError(f"module 'service' has no attribute {name!r}")
