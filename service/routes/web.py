"""``GET /``: the web page (``service/static``): tag a sentence, stream a dialog. No build step: plain
HTML, CSS and JavaScript that call the same JSON API as any other client."""

from flask import Blueprint, current_app

from service.openapi import documented

bp = Blueprint("web", __name__)


@bp.get("/")
@documented(tags=("web",), HTTP_200=None)
def index():
    """The web page (HTML)."""
    return current_app.send_static_file("index.html")
