"""``/v1/services``: register, list, show and delete SGD service schemas (``service.services``).

``PUT /v1/services/<name>`` takes one SGD schema object, checked strictly (``training.common.service_schema``:
every field, every limit; a bad one is answered 400 ``invalid_schema`` naming the field by its path), lets the
serving schema-guided models read it (``app.extensions["seqtag.schema_check"]``, when the model side sets one),
then stores it where every worker sees it. ``GET`` lists the registered services and those the loaded model
versions ship; a shipped service cannot be deleted (409), only overridden by registering a schema of its name.
"""

from __future__ import annotations

import logging
from typing import Literal

from flask import Blueprint, current_app, jsonify
from pydantic import BaseModel, Field

from service.errors import APIError
from service.json_body import json_body
from service.openapi import BODY_ERRORS, documented
from service.schemas import ErrorResponse
from service.services import ServiceCatalog, shipped_schemas, unknown_service_error, valid_name
from training.common.service_schema import NAME_RULE, SchemaError, ServiceSchema, parse_schema, schema_digest

logger = logging.getLogger(__name__)

bp = Blueprint("services", __name__, url_prefix="/v1/services")


# --- answers (the request body is ``ServiceSchema`` itself) ---


class ServiceRegistered(BaseModel):
    service_name: str
    digest: str = Field(description="16 hex digits of the SHA-256 of the schema's canonical JSON: equal schemas, "
                                    "equal digests")
    slots: list[str] = Field(description="the slots' names, in order")
    intents: list[str] = Field(description="the intents' names, in order")
    registered: Literal[True]


class ServiceSummary(BaseModel):
    service_name: str
    description: str
    slots: list[str] = Field(description="the slots' names, in order")
    intents: list[str] = Field(description="the intents' names, in order")
    digest: str
    source: Literal["registered", "shipped"] = Field(
        description="registered: with PUT /v1/services/<name> (it overrides a shipped schema of the same name); "
                    "shipped: in the schemas.json of a loaded model version")
    models: list[str] = Field(description="the loaded models whose serving version ships a schema of this name")


class ServiceList(BaseModel):
    services: list[ServiceSummary]


class ServiceView(ServiceSchema):
    """The whole schema, as registered or shipped, and where it comes from."""

    digest: str
    source: Literal["registered", "shipped"]
    models: list[str] = Field(description="the loaded models whose serving version ships a schema of this name")


# --- helpers ---


def _catalog() -> ServiceCatalog:
    return current_app.extensions["seqtag.services"]


def _shipped() -> dict[str, tuple[ServiceSchema, list[str]]]:
    """Service name -> (its schema, the models that ship it), over the serving versions of the loaded models; the
    first model (by name) that ships a service gives its schema."""
    registry = current_app.extensions.get("seqtag.registry")
    found: dict[str, tuple[ServiceSchema, list[str]]] = {}
    for model_name in registry.names() if registry is not None else []:
        try:
            version = registry.get(model_name)
        except LookupError:  # a model with no version that loaded: it ships nothing now
            continue
        try:
            schemas = shipped_schemas(version.directory)
        except SchemaError as error:  # the model side rejects such a version; the listing goes on without it
            logger.warning("model %s version %s: its %s", model_name, version.version, error)
            continue
        for name, schema in schemas.items():
            found.setdefault(name, (schema, []))[1].append(model_name)
    return found


def _summary(schema: ServiceSchema, source: str, models: list[str]) -> dict:
    return {"service_name": schema.service_name, "description": schema.description, "slots": schema.slot_names,
            "intents": schema.intent_names, "digest": schema_digest(schema), "source": source, "models": models}


# --- routes ---


@bp.put("/<service_name>")
@documented(json=ServiceSchema, tags=("services",), HTTP_200=ServiceRegistered, HTTP_201=ServiceRegistered,
            HTTP_404=ErrorResponse, HTTP_503=ErrorResponse, **BODY_ERRORS)
def put_service(service_name: str):
    """Register a service's SGD schema (201), or replace it (200); every worker answers for it from then on."""
    if not valid_name(service_name):
        raise APIError(400, "invalid_schema", f"the service name in the URL: {NAME_RULE}")
    try:
        schema = parse_schema(json_body())
    except SchemaError as error:
        raise APIError(400, "invalid_schema", str(error)) from None
    if schema.service_name != service_name:
        raise APIError(400, "invalid_schema", f"service_name: {schema.service_name!r} is not {service_name!r}, the "
                                              f"name in the URL")
    check = current_app.extensions.get("seqtag.schema_check")
    if check is not None:
        # The serving schema-guided models read the descriptions now: a schema they cannot encode is refused
        # here rather than failing every request that names the service later.
        try:
            check(schema)
        except ValueError as error:
            raise APIError(400, "invalid_schema", str(error)) from None
    created = _catalog().register(schema)
    answer = {"service_name": schema.service_name, "digest": schema_digest(schema), "slots": schema.slot_names,
              "intents": schema.intent_names, "registered": True}
    return jsonify(answer), 201 if created else 200


@bp.get("")
@documented(tags=("services",), HTTP_200=ServiceList, HTTP_503=ErrorResponse)
def list_services():
    """Every service known: the registered ones and those the loaded model versions ship."""
    registered = _catalog().registered()
    shipped = _shipped()
    services = []
    for name in sorted(set(registered) | set(shipped)):
        models = shipped[name][1] if name in shipped else []
        if name in registered:
            services.append(_summary(registered[name], "registered", models))
        else:
            services.append(_summary(shipped[name][0], "shipped", models))
    return jsonify({"services": services})


@bp.get("/<service_name>")
@documented(tags=("services",), HTTP_200=ServiceView, HTTP_404=ErrorResponse, HTTP_503=ErrorResponse)
def show_service(service_name: str):
    """One service's whole schema, and whether it is registered or shipped (and by which models)."""
    schema, source = _catalog().get(service_name), "registered"
    shipped = _shipped().get(service_name)
    if schema is None and shipped is not None:
        schema, source = shipped[0], "shipped"
    if schema is None:
        raise unknown_service_error(service_name)
    return jsonify({**schema.to_json(), "digest": schema_digest(schema), "source": source,
                    "models": shipped[1] if shipped else []})


@bp.delete("/<service_name>")
@documented(tags=("services",), HTTP_204=None, HTTP_404=ErrorResponse, HTTP_409=ErrorResponse, HTTP_503=ErrorResponse)
def delete_service(service_name: str):
    """Forget a registered schema (a shipped schema of the same name serves again); a shipped one stays (409)."""
    if _catalog().delete(service_name):
        return "", 204
    shipped = _shipped().get(service_name)
    if shipped is not None:
        raise APIError(409, "shipped_service", f"service {service_name!r} comes with model(s) {', '.join(shipped[1])} "
                                               f"(their schemas.json) and cannot be deleted; register a schema of "
                                               f"that name to override it")
    raise unknown_service_error(service_name)
