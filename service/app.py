"""``create_app(config)`` builds the Flask app (served by gunicorn in production; ``service.wsgi``).

Settings come from defaults <- ``SEQTAG_*`` environment variables <- the ``config`` mapping
(``service.settings``). The model registry, the dialog session store, the service catalog (registered SGD
service schemas, ``service.services``) and the settings live in ``app.extensions``.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported (by the registry)

from flask import Flask  # noqa: E402

from service import auth, docs, metrics, openapi, request_log  # noqa: E402
from service.errors import register_error_handlers  # noqa: E402
from service.fleet import Fleet  # noqa: E402
from service.registry import ModelRegistry  # noqa: E402
from service.routes import dialogs, health, models, web  # noqa: E402
from service.routes import services as service_routes  # noqa: E402
from service.services import ServiceCatalog, schema_check  # noqa: E402
from service.sessions import InProcessSessionStore, RedisSessionStore, SessionStoreUnavailable  # noqa: E402
from service.settings import ServiceSettings  # noqa: E402
from training.common.saved_model import set_tensorflow_threads  # noqa: E402

logger = logging.getLogger(__name__)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    settings = ServiceSettings.load(config)
    set_tensorflow_threads(settings.tf_inter_op_threads, settings.tf_intra_op_threads)  # before any model loads
    api_keys = auth.ApiKeys(settings.api_keys)  # a malformed key fails now, before any model loads
    # and so do malformed per-key limits
    key_limits = auth.parse_key_limits(settings.api_key_limits, api_keys) if api_keys else {}
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False
    app.url_map.converters["model_name"] = models.ModelNameConverter
    app.extensions["seqtag.settings"] = settings
    register_error_handlers(app)
    # Registered service schemas, in Redis or in services_dir: nothing is read or created until a request asks.
    # Before the models load, so that loading a schema-guided version can reach it.
    ServiceCatalog.from_settings(settings).init_app(app)
    ModelRegistry(settings).init_app(app)
    app.extensions["seqtag.schema_check"] = schema_check(app.extensions["seqtag.registry"], app.extensions["seqtag.services"])
    if settings.dialog_sessions:
        if settings.redis_url:
            store = RedisSessionStore(settings.redis_url, settings.session_ttl_seconds,
                                      timeout_seconds=settings.redis_timeout_seconds, check=False)
            try:
                store.check()
            except SessionStoreUnavailable as error:
                # Not fatal here: a worker that gunicorn restarts while Redis is down must still boot and tag;
                # its dialog routes answer 503 until Redis is back. gunicorn's master checks it once at start.
                logger.warning("%s; dialog routes answer 503 until it is back", error)
            app.extensions["seqtag.sessions"] = store
            # Several hosts share this Redis: new sessions start on versions every worker has (service.fleet)
            # and hosts compare their API keys (a warning and a metric when they differ)
            app.extensions["seqtag.registry"].attach_fleet(Fleet(store.client, settings.poll_interval_seconds,
                                                                 api_keys=api_keys.fingerprint(key_limits)))
        else:
            app.extensions["seqtag.sessions"] = InProcessSessionStore(settings.max_sessions, settings.session_ttl_seconds)
        app.register_blueprint(dialogs.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(models.bp)
    app.register_blueprint(service_routes.bp)
    app.register_blueprint(web.bp)
    metrics.init_app(app)
    if settings.request_log:
        request_log.init_app(app)
    # After the metrics' and the log's request hooks, so a refused request is timed, counted and logged too.
    auth.init_app(app, api_keys, settings)
    openapi.init_app(app, _version())  # after the API's routes: it documents the routes registered before it
    docs.init_app(app)  # the pages that show the document (not in it)
    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("seqtag")
    except PackageNotFoundError:  # run from a checkout that was not installed
        return "0+unknown"
