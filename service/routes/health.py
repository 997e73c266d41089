"""``GET /healthz`` (the process answers) and ``GET /readyz`` (every model found has a serving version)."""

from flask import Blueprint, current_app, jsonify

from service.errors import APIError
from service.openapi import documented
from service.schemas import ErrorResponse, Health, Ready

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@documented(tags=("health",), HTTP_200=Health)
def healthz():
    """The process answers."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
@documented(tags=("health",), HTTP_200=Ready, HTTP_503=ErrorResponse)
def readyz():
    """Every model found has a serving version."""
    registry = current_app.extensions["seqtag.registry"]
    ready, missing = registry.ready()
    if not ready:
        detail = f"models not loaded: {', '.join(missing)}" if missing else "no models found"
        raise APIError(503, "not_ready", detail)
    return jsonify({"status": "ready", "models": {name: registry.get(name).version for name in registry.names()}})
