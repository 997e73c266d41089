"""MkDocs hook: the API reference page's OpenAPI document, generated from the service at build time.

The service builds its OpenAPI 3.1 document from the pydantic schemas its views parse requests with
(``service.openapi``). This hook asks an app with no models for it and adds it to the site as
``api/openapi.json``, which ``docs/api-reference.md`` renders with Swagger UI: the reference cannot drift from the
code, and nothing generated is committed.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile

from mkdocs.structure.files import File

logger = logging.getLogger("mkdocs.hooks.openapi")

DOCUMENT_PATH = "api/openapi.json"


def openapi_document() -> dict:
    """The document ``GET /openapi.json`` serves, from an app over an empty models directory."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from service import create_app

    with tempfile.TemporaryDirectory() as models_dir:
        app = create_app({"models_dir": models_dir, "poll_interval_seconds": 0, "request_log": False})
        response = app.test_client().get("/openapi.json")
        if response.status_code != 200:
            raise RuntimeError(f"/openapi.json answered {response.status_code}")
        return response.get_json()


def on_files(files, config):
    document = openapi_document()
    files.append(File.generated(config, DOCUMENT_PATH, content=json.dumps(document, indent=2, sort_keys=True)))
    logger.info("%s: %d paths from the service", DOCUMENT_PATH, len(document.get("paths", {})))
    return files
