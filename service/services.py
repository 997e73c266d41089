"""The server's service registry: SGD service schemas registered at run time, and the ones models ship.

A schema-guided model reads a service's schema (its slot and intent descriptions) rather than knowing the
service by name, so a new service needs no retraining: ``PUT /v1/services/<name>`` registers its schema
(``service.routes.services``) and from then on every worker answers for it.

Where registrations live (``ServiceCatalog.from_settings``):

* Redis, when ``SEQTAG_REDIS_URL`` is set: one hash ``seqtag:services`` (name -> the schema's JSON) and a counter
  ``seqtag:services:generation`` that every write and delete increments in the same MULTI. A worker keeps the
  parsed schemas and reads the counter on each lookup (one GET): a new number means something changed, and it
  reads the hash again (only schemas whose JSON changed are parsed again).
* Otherwise a directory, ``SEQTAG_SERVICES_DIR`` (default ``$XDG_STATE_HOME/seqtag/services``): one
  ``<name>.json`` per service, written to a temporary file in the same directory and renamed over the old one
  (``os.replace``: a reader sees the old file or the new one, never half of one); deleting is unlinking. A
  worker keeps the parsed schemas with each file's (mtime, size, inode) and the directory's mtime, and reads
  again what changed. One host only (every worker reads the same directory).

Either way a registration outlives a restart of the server.

A model version directory may hold ``schemas.json`` (a list, as SGD's ``schema-train.json``): the schemas the
version was trained with (``shipped_schemas``). ``ServiceCatalog.lookup`` prefers a registered schema, then a
shipped one, else raises ``UnknownService`` (404 ``unknown_service``, with how to register). While Redis cannot be
reached, ``ServicesUnavailable`` answers 503 ``services_unavailable`` with ``Retry-After``, as the dialog
sessions do.

``ServiceCatalog.encoding`` keeps what a schema-guided model version computes from a schema
(``ModelVersion.encode_service``) in an LRU keyed by model, version, service and the schema's digest: a
re-registered schema has another digest, so its old encoding is never used again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator

from flask import Flask, current_app

from service.errors import APIError, error_response
from service.settings import ServiceSettings, default_services_dir
from training.common.service_schema import (NAME_PATTERN, NAME_RULE, SchemaError, ServiceSchema, canonical_json,
                                            parse_schema, read_schemas, schema_digest)

logger = logging.getLogger(__name__)

_NAME = re.compile(NAME_PATTERN)
SHIPPED_FILE = "schemas.json"  # in a model version directory
ENCODING_CACHE_SIZE = 256
# A file or directory modified this recently may be modified again within the same tick of its clock (file
# times are as coarse as a few milliseconds): its unchanged time would then hide the change, so it is not trusted.
_RACY_NS = 2_000_000_000


class UnknownService(LookupError):
    """No registered schema and no shipped one for this service."""

    def __init__(self, name: str):
        super().__init__(f"no service {name!r}")
        self.name = name


class ServicesUnavailable(RuntimeError):
    """The service store (Redis, or the directory) cannot be used now; nothing was changed."""


def unknown_service_error(name: str, model_name: str | None = None) -> APIError:
    """The 404 for a service nobody registered (and, with ``model_name``, that model does not ship)."""
    subject = f"model {model_name!r} knows no service {name!r}" if model_name else f"no service {name!r}"
    if not _NAME.fullmatch(name):
        return APIError(404, "unknown_service", f"{subject}: a service name is {NAME_RULE}")
    return APIError(404, "unknown_service", f"{subject}: register its schema with PUT /v1/services/{name} "
                                            f"(an SGD schema object)")


def valid_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name))


# --- storage ---------------------------------------------------------------------------------------------------


class ServiceStore:
    """Registered schemas by name; one interface, two backends. Every method sees every other worker's writes."""

    backend = "abstract"

    def put(self, schema: ServiceSchema) -> bool:
        """Store ``schema`` under its name; True if no schema had that name."""
        raise NotImplementedError

    def delete(self, name: str) -> bool:
        raise NotImplementedError

    def get(self, name: str) -> ServiceSchema | None:
        raise NotImplementedError

    def all(self) -> dict[str, ServiceSchema]:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _parsed(text: str | bytes, where: str) -> ServiceSchema | None:
    """A stored schema, or None (logged) if it does not parse: someone edited the store by hand."""
    try:
        return parse_schema(json.loads(text), where)
    except (ValueError, SchemaError) as error:  # json's JSONDecodeError is a ValueError
        detail = str(error) if isinstance(error, SchemaError) else f"{where}: {error}"  # a SchemaError names where
        logger.warning("ignoring a stored service schema that is not valid: %s", detail[:500])
        return None


class DirectoryServiceStore(ServiceStore):
    backend = "directory"

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._files: dict[str, tuple[tuple, ServiceSchema | None]] = {}  # name -> (file signature, its schema)
        self._listing: tuple[int, list[str]] | None = None  # (directory mtime_ns, names), when trusted

    def _path(self, name: str) -> Path:
        return self.directory / f"{name}.json"  # name matched NAME_PATTERN: no '/', no '..'

    @staticmethod
    def _signature(stat: os.stat_result) -> tuple:
        return stat.st_mtime_ns, stat.st_size, stat.st_ino

    @staticmethod
    def _trusted(stat: os.stat_result) -> bool:
        return time.time_ns() - stat.st_mtime_ns > _RACY_NS

    @contextlib.contextmanager
    def _writable(self) -> Iterator[None]:
        try:
            yield
        except OSError as error:  # a full disk, a read-only mount, a directory nobody may write to
            logger.exception("cannot write to the services directory %s", self.directory)
            # The client's message names no path of this host; the log above does.
            raise ServicesUnavailable(f"the service store (a directory) cannot be written: "
                                      f"{type(error).__name__}: {error.strerror or 'failed'}") from error

    def _unreadable(self, error: OSError) -> ServicesUnavailable:
        logger.error("cannot read the services directory %s: %s", self.directory, error)
        return ServicesUnavailable(f"the service store (a directory) cannot be read: {type(error).__name__}: "
                                   f"{error.strerror or 'failed'}")

    def put(self, schema: ServiceSchema) -> bool:
        path = self._path(schema.service_name)
        with self._writable():
            self.directory.mkdir(parents=True, exist_ok=True)
            created = not path.exists()
            # A dot file with another suffix: never listed as a service while it is being written.
            descriptor, temporary = tempfile.mkstemp(dir=self.directory, prefix=f".{schema.service_name}.",
                                                     suffix=".tmp")
            try:
                with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                    file.write(canonical_json(schema))
                    file.flush()
                    os.fsync(file.fileno())  # the data is on disk before the name points at it
                os.replace(temporary, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise
            self._sync_directory()
        return created

    def _sync_directory(self) -> None:
        """The rename itself on disk (else a crash may forget a registration that was answered 201)."""
        try:
            descriptor = os.open(self.directory, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(descriptor)
        except OSError:  # some filesystems cannot sync a directory; the rename happened all the same
            pass
        finally:
            os.close(descriptor)

    def delete(self, name: str) -> bool:
        with self._writable():
            try:
                self._path(name).unlink()
            except FileNotFoundError:
                return False
            self._sync_directory()
        return True

    def get(self, name: str) -> ServiceSchema | None:
        path = self._path(name)
        try:
            stat = path.stat()
        except FileNotFoundError:
            with self._lock:
                self._files.pop(name, None)
            return None
        except OSError as error:
            raise self._unreadable(error) from error
        cached = self._files.get(name)
        if cached is not None and cached[0] == self._signature(stat):
            return cached[1]
        try:
            with open(path, "rb") as file:
                stat = os.fstat(file.fileno())  # the signature of what is read (a rename may come between)
                text = file.read()
        except FileNotFoundError:  # deleted since the stat
            return None
        except OSError as error:
            raise self._unreadable(error) from error
        schema = _parsed(text, str(path))
        if schema is not None and schema.service_name != name:
            logger.warning("ignoring %s: it holds the schema of %r", path, schema.service_name)
            schema = None
        with self._lock:
            if self._trusted(stat):
                self._files[name] = (self._signature(stat), schema)
            else:
                self._files.pop(name, None)  # read again next time: it may change within its mtime's tick
        return schema

    def names(self) -> list[str]:
        try:
            stat = self.directory.stat()
        except FileNotFoundError:  # nothing registered yet (the directory is made by the first write)
            return []
        except OSError as error:
            raise self._unreadable(error) from error
        listing = self._listing
        if listing is not None and listing[0] == stat.st_mtime_ns:
            return listing[1]
        try:
            names = sorted(entry.name[:-5] for entry in os.scandir(self.directory)
                           if entry.name.endswith(".json") and _NAME.fullmatch(entry.name[:-5]))
        except OSError as error:
            raise self._unreadable(error) from error
        self._listing = (stat.st_mtime_ns, names) if self._trusted(stat) else None
        return names

    def all(self) -> dict[str, ServiceSchema]:
        schemas = {name: self.get(name) for name in self.names()}
        return {name: schema for name, schema in schemas.items() if schema is not None}


class RedisServiceStore(ServiceStore):
    backend = "redis"
    HASH = "seqtag:services"
    GENERATION = "seqtag:services:generation"

    def __init__(self, url: str, timeout_seconds: float = 2.0):
        import redis
        from redis.backoff import ExponentialWithJitterBackoff
        from redis.retry import Retry

        # As the session store's client: a few quick retries ride out a dropped connection, then 503 fast.
        self.client = redis.Redis.from_url(url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds,
                                           retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), 3))
        self._lock = threading.Lock()
        # The last snapshot read: the counter's value then, and the schemas (a dict replaced whole, never changed,
        # so request threads read it without the lock). b"" never equals a counter: the first lookup reads.
        self._generation: bytes | None = b""
        self._schemas: dict[str, ServiceSchema] = {}
        self._texts: dict[str, bytes] = {}

    @contextlib.contextmanager
    def _available(self) -> Iterator[None]:
        import redis

        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as error:  # BusyLoadingError: still reading its AOF
            raise ServicesUnavailable(f"the service store (Redis) is unavailable: {type(error).__name__}: "
                                      f"{str(error)[:200]}") from error

    def _current(self) -> dict[str, ServiceSchema]:
        with self._available():
            generation = self.client.get(self.GENERATION)
            if generation == self._generation:
                return self._schemas
            with self.client.pipeline(transaction=True) as pipe:  # the counter and the hash of one moment
                generation, stored = pipe.get(self.GENERATION).hgetall(self.HASH).execute()
        with self._lock:
            schemas, texts = {}, {}
            for raw_name, text in stored.items():
                name = raw_name.decode("utf-8", "replace")
                if self._texts.get(name) == text and name in self._schemas:
                    schema = self._schemas[name]  # unchanged: not parsed again
                else:
                    schema = _parsed(text, f"redis {self.HASH}[{name}]")
                if schema is not None and schema.service_name == name:
                    schemas[name], texts[name] = schema, text
            self._schemas, self._texts, self._generation = schemas, texts, generation
        return schemas

    def put(self, schema: ServiceSchema) -> bool:
        with self._available(), self.client.pipeline(transaction=True) as pipe:
            added, _ = pipe.hset(self.HASH, schema.service_name, canonical_json(schema)).incr(self.GENERATION).execute()
        return bool(added)

    def delete(self, name: str) -> bool:
        with self._available(), self.client.pipeline(transaction=True) as pipe:
            removed, _ = pipe.hdel(self.HASH, name).incr(self.GENERATION).execute()
        return bool(removed)

    def get(self, name: str) -> ServiceSchema | None:
        return self._current().get(name)

    def all(self) -> dict[str, ServiceSchema]:
        return dict(self._current())

    def close(self) -> None:
        self.client.close()


# --- shipped schemas ---------------------------------------------------------------------------------------------

_shipped_lock = threading.Lock()
_shipped: OrderedDict[str, tuple[tuple, dict[str, ServiceSchema]]] = OrderedDict()  # directory -> (signature, schemas)
_SHIPPED_CACHE_SIZE = 64  # model versions: a few per model are loaded at once


def shipped_schemas(directory: Path) -> dict[str, ServiceSchema]:
    """The schemas a model version ships (``<directory>/schemas.json``) by name; {} if it ships none. Read once per
    directory (again if the file changes). Raises ``SchemaError`` if the file is not a valid list of schemas."""
    path = Path(directory) / SHIPPED_FILE
    key = str(Path(directory).resolve())
    try:
        stat = path.stat()
    except FileNotFoundError:
        return {}
    signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
    with _shipped_lock:
        cached = _shipped.get(key)
        if cached is not None and cached[0] == signature:
            _shipped.move_to_end(key)
            return dict(cached[1])  # a copy: callers may change theirs
    schemas = {schema.service_name: schema for schema in read_schemas(path)}
    with _shipped_lock:
        _shipped[key] = (signature, schemas)
        _shipped.move_to_end(key)
        while len(_shipped) > _SHIPPED_CACHE_SIZE:
            _shipped.popitem(last=False)
    return dict(schemas)


# --- the catalog -------------------------------------------------------------------------------------------------


class ServiceCatalog:
    """What the app knows of services: the registered schemas (a ``ServiceStore``) and the models' encodings of
    them. Lives in ``app.extensions["seqtag.services"]``."""

    def __init__(self, store: ServiceStore, encoding_cache_size: int = ENCODING_CACHE_SIZE):
        self.store = store
        self.encoding_cache_size = encoding_cache_size
        self._encodings: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> "ServiceCatalog":
        if settings.redis_url:
            return cls(RedisServiceStore(settings.redis_url, settings.redis_timeout_seconds))
        return cls(DirectoryServiceStore(settings.services_dir or default_services_dir(os.environ)))

    @property
    def backend(self) -> str:
        return self.store.backend

    def init_app(self, app: Flask) -> None:
        app.extensions["seqtag.services"] = self
        # App-wide: the model routes look services up too (a tagging request for a registered service).
        app.register_error_handler(ServicesUnavailable, _unavailable)
        app.register_error_handler(UnknownService, _unknown)

    # --- registered schemas ---

    def register(self, schema: ServiceSchema) -> bool:
        """Store ``schema`` (replacing one of the same name); True if it is new."""
        created = self.store.put(schema)
        logger.info("service %s %s (digest %s)", schema.service_name, "registered" if created else "replaced",
                    schema_digest(schema))
        return created

    def delete(self, name: str) -> bool:
        if not valid_name(name):
            return False
        deleted = self.store.delete(name)
        if deleted:
            logger.info("service %s deleted", name)
        return deleted

    def get(self, name: str) -> ServiceSchema | None:
        """The registered schema of ``name``, or None."""
        return self.store.get(name) if valid_name(name) else None

    def names(self) -> list[str]:
        return sorted(self.store.all())

    def registered(self) -> dict[str, ServiceSchema]:
        return self.store.all()

    def lookup(self, name: str, shipped: dict[str, ServiceSchema]) -> ServiceSchema:
        """The schema to use for ``name``: the registered one (a registration overrides what a model ships), else
        ``shipped[name]``, else ``UnknownService``."""
        schema = self.get(name)
        if schema is None:
            schema = shipped.get(name)
        if schema is None:
            raise UnknownService(name)
        return schema

    # --- encodings ---

    def encoding(self, model_version: Any, schema: ServiceSchema) -> Any:
        """``model_version.encode_service(schema)``, computed once per (model, version, service, digest)."""
        key = (model_version.name, model_version.version, schema.service_name, schema_digest(schema))
        return self.cached(key, lambda: model_version.encode_service(schema))

    def cached(self, key: tuple, compute) -> Any:
        """``compute()`` once per ``key`` (an LRU of ``encoding_cache_size``): what models derive from a schema."""
        with self._lock:
            if key in self._encodings:
                self._encodings.move_to_end(key)
                return self._encodings[key]
        # Outside the lock: encoding runs the model, and other threads' lookups must not wait for it. Two threads
        # that miss together both compute it; the results are equal.
        value = compute()
        with self._lock:
            self._encodings[key] = value
            self._encodings.move_to_end(key)
            while len(self._encodings) > self.encoding_cache_size:
                self._encodings.popitem(last=False)
        return value

    def close(self) -> None:
        self.store.close()


def _unavailable(error: ServicesUnavailable):
    # Nothing was written: the same request can be sent again once the store is back.
    response = error_response(503, "services_unavailable", f"{error}; registered services are unavailable for now, "
                                                            "send the request again later")
    response.headers["Retry-After"] = "1"
    return response


def _unknown(error: UnknownService):
    api_error = unknown_service_error(error.name)
    return error_response(api_error.status, api_error.code, api_error.message)


def span_condition(model_version: Any, service: str | None) -> Any:
    """What a span model tags a turn of ``service`` with, or the 4xx that says why it cannot.

    * A schema-guided version: the encoding of the service's schema (registered, else shipped with the version),
      kept per schema digest; no service is 400 ``service_required``, an unknown one 404 ``unknown_service``.
    * A version trained on services by name (``conditions`` in its metadata): the name, which must be one it was
      trained on (it reads no schema, so a registration cannot teach it one): else 404 ``unknown_service``.
    * Any other span model: the service as given (or None).
    """
    if getattr(model_version, "schema_guided", False):
        if service is None:
            raise APIError(400, "service_required", f"model {model_version.name!r} tags the slots of a service: give "
                                                    f"'service' (GET /v1/services lists the known ones)")
        catalog: ServiceCatalog = current_app.extensions["seqtag.services"]
        try:
            schema = catalog.lookup(service, model_version.shipped_schemas)
        except UnknownService:
            raise unknown_service_error(service) from None
        return catalog.encoding(model_version, schema)
    known = getattr(model_version, "conditions", set())
    if service is not None and known and service not in known:
        raise APIError(404, "unknown_service", f"model {model_version.name!r} version {model_version.version} was "
                                               f"trained on services by name and reads no schema: {service!r} is not "
                                               f"one of its {len(known)} services; a schema-guided version serves "
                                               f"registered services (PUT /v1/services/{service})")
    return service


def schema_check(registry: Any, catalog: ServiceCatalog):
    """``app.extensions["seqtag.schema_check"]``: a registration is encoded at once by every serving schema-guided
    model (so the descriptions are read once, here, and a schema a model cannot read is refused with 400)."""
    def check(schema: ServiceSchema) -> None:
        for name in registry.names():
            try:
                version = registry.get(name)
            except LookupError:
                continue
            if getattr(version, "schema_guided", False):
                catalog.encoding(version, schema)
    return check


def action_map(dialog_version: Any, slots_version: Any, encoding: Any) -> Any:
    """The map of an action model's labels onto a service's slots (``training.schema_guided.actions``), from the
    service's encoding by the session's schema-guided span model (``span_condition``); kept in the catalog's cache
    per (both versions, service, schema digest)."""
    from training.schema_guided.actions import build_action_map, source_slot_vectors

    catalog: ServiceCatalog = current_app.extensions["seqtag.services"]
    shipped = slots_version.shipped_schemas

    def build():
        sources = catalog.cached(("action-sources", slots_version.name, slots_version.version),
                                 lambda: source_slot_vectors([catalog.encoding(slots_version, s) for s in shipped.values()]))
        trained = encoding.service in shipped and schema_digest(shipped[encoding.service]) == encoding.digest
        return build_action_map(dialog_version.labels, sources, encoding, trained=trained)

    return catalog.cached(("actions", dialog_version.name, dialog_version.version, slots_version.name,
                           slots_version.version, encoding.service, encoding.digest), build)
