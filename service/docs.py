"""The interactive API pages under ``/docs/``, working offline: every script, style sheet and image is served by
the app itself from a pinned package, nothing from a CDN (the machines this service runs on often have no
internet).

- ``/docs/swagger/``: Swagger UI 5.34, the blueprint and ``dist/`` of ``flask-swagger-ui``;
- ``/docs/redoc/``: Redoc 2.5, ``redoc.standalone.js`` of ``flask-openapi3-redoc``;
- ``/docs/scalar/``: Scalar, ``scalar.standalone.js`` of ``flask-openapi3-scalar``;
- ``/docs/``: redirects to Swagger UI.

The packages are only read from (their Python code is not used beyond flask-swagger-ui's blueprint). The pages
turn off what would call out: Swagger UI's online validator badge, Scalar's web fonts, telemetry, AI agent and
request proxy; Redoc's side menu shows its maker's logo from cdn.redoc.ly with no option to turn it off, so its
bundle is served with that one URL pointing at the same package's own logo. Each page also carries a Content-Security-Policy that lets the browser load and connect to this
origin only, so a later version of a bundle that reaches for a CDN fails visibly instead of leaking requests.
"""

from __future__ import annotations

import functools
import json
from importlib import resources

from flask import Blueprint, Flask, Response, redirect, render_template_string, send_from_directory
from flask_swagger_ui import get_swaggerui_blueprint

DOCS_PATH = "/docs"
OPENAPI_URL = "/openapi.json"

# Inline scripts and styles: Swagger UI's page starts it with an inline script, Redoc and Scalar inject styles;
# blob: workers are Redoc's search. Everything else comes from this origin, or not at all.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
                           "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
                           "object-src 'none'; base-uri 'self'; frame-ancestors 'self'")

_REDOC_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>seqtag API (Redoc)</title>
  <link rel="icon" href="data:,">
  <style>body { margin: 0; padding: 0; }</style>
</head>
<body>
  <div id="redoc"></div>
  <script src="{{ assets }}/js/redoc.standalone.js"></script>
  <script>Redoc.init({{ spec_url|tojson }}, {}, document.getElementById("redoc"));</script>
</body>
</html>
"""

_SCALAR_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>seqtag API (Scalar)</title>
  <link rel="icon" href="data:,">
</head>
<body>
  <script id="api-reference" data-url="{{ spec_url }}" data-configuration="{{ configuration }}"></script>
  <script src="{{ assets }}/js/scalar.standalone.js"></script>
</body>
</html>
"""

# Scalar's defaults that reach out: fonts from fonts.scalar.com, usage telemetry, the "Ask AI" agent, and a
# proxy for "try it" requests (same-origin requests need none).
_SCALAR_CONFIGURATION = {"withDefaultFonts": False, "telemetry": False, "agent": {"disabled": True},
                         "mcp": {"disabled": True}, "proxyUrl": "", "hideClientButton": True,
                         "defaultOpenAllTags": True}  # every operation on the page, not only the first tag's

# Where each page's files lie inside its package.
_BUNDLES = {"redoc": ("flask_openapi3_redoc", "templates/redoc"), "scalar": ("flask_openapi3_scalar", "templates/scalar")}
_REDOC_LOGO = (b"https://cdn.redoc.ly/redoc/logo-mini.svg", f"{DOCS_PATH}/redoc/assets/images/redoc.svg".encode())

bp = Blueprint("openapi_docs", __name__, url_prefix=DOCS_PATH)
# flask-swagger-ui's own blueprint: its page (from its template) and Swagger UI's dist/ files.
swagger_bp = get_swaggerui_blueprint(
    f"{DOCS_PATH}/swagger", OPENAPI_URL, blueprint_name="openapi_docs_swagger",
    config={"app_name": "seqtag API (Swagger UI)", "validatorUrl": None, "deepLinking": True,
            "displayRequestDuration": True, "oauth2RedirectUrl": f"{DOCS_PATH}/swagger/oauth2-redirect.html"})
# Open to every client even when API keys are on (service.auth).
ENDPOINTS = {"openapi_docs.index", "openapi_docs.page", "openapi_docs.asset", "openapi_docs_swagger.show"}


def _bundle_dir(ui: str) -> str:
    package, folder = _BUNDLES[ui]
    return str(resources.files(package).joinpath(folder))


@bp.get("/")
def index():
    return redirect(f"{DOCS_PATH}/swagger/")


@bp.get("/<any(redoc, scalar):ui>/")
def page(ui: str):
    assets = f"{DOCS_PATH}/{ui}/assets"
    if ui == "redoc":
        return render_template_string(_REDOC_PAGE, assets=assets, spec_url=OPENAPI_URL)
    return render_template_string(_SCALAR_PAGE, assets=assets, spec_url=OPENAPI_URL,
                                  configuration=json.dumps(_SCALAR_CONFIGURATION))


@bp.get("/<any(redoc, scalar):ui>/assets/<path:filename>")
def asset(ui: str, filename: str):
    if ui == "redoc" and filename == "js/redoc.standalone.js":
        return Response(_redoc_bundle(), mimetype="text/javascript", headers={"Cache-Control": "max-age=3600"})
    return send_from_directory(_bundle_dir(ui), filename, max_age=3600)  # refuses paths outside the folder


@functools.cache
def _redoc_bundle() -> bytes:
    """Redoc's bundle with its logo taken from this server (``tests/test_web_page.py`` sees no other request)."""
    with open(f"{_bundle_dir('redoc')}/js/redoc.standalone.js", "rb") as bundle:
        return bundle.read().replace(*_REDOC_LOGO)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.register_blueprint(swagger_bp)

    @app.after_request
    def _docs_policy(response):
        from flask import request

        if request.blueprint in ("openapi_docs", "openapi_docs_swagger"):
            response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response
