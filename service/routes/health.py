"""``GET /healthz`` (the process answers) and ``GET /readyz`` (every model found has a serving version)."""

from flask import Blueprint, current_app, jsonify

from service.errors import APIError

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    registry = current_app.extensions["seqtag.registry"]
    ready, missing = registry.ready()
    if not ready:
        detail = f"models not loaded: {', '.join(missing)}" if missing else "no models found"
        raise APIError(503, "not_ready", detail)
    return jsonify({"status": "ready", "models": {name: registry.get(name).version for name in registry.names()}})
