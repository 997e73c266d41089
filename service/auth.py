"""Optional API keys: ``SEQTAG_API_KEYS="chatbot:<key>,batch:<key>"``, sent as ``Authorization: Bearer <key>``.

With no keys configured the service is open, as before. With keys, every route but the health checks, the
API document and its pages, and the web page's static files answers 401 (with ``WWW-Authenticate: Bearer``)
unless the request carries one of them. The key's *name* (the part before ``:``) is who the request is
from: dialog sessions belong to it (another key sees 404, as for a session that does not exist) and
per-key limits count by it. Keys themselves are never logged or stored; a key without a name is named
``key<N>`` by its position.

Per-key limits (``SEQTAG_API_KEY_LIMITS``, JSON by key name) replace the service's request limits for that
key's requests: body size, sentences, tokens and characters per request, live sessions
(``current_settings()`` gives the limits that apply to the current request).

A presented key is compared with every configured key by SHA-256 digest with ``hmac.compare_digest``,
all of them every time, so the answer's timing says nothing about how much of a key was right or which
key came close.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
from functools import partial

from flask import Flask, current_app, g, request

from service import docs
from service.errors import error_response
from service.settings import ServiceSettings

MIN_KEY_CHARS = 16  # a guessable key is no key
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Endpoints open to everyone: health checks, the API document and its pages, the web page and its files
# (the page's own API calls need a key like any other client's).
# The settings a key's limits may replace.
PER_KEY_LIMITS = ("max_body_bytes", "max_sentences", "max_tokens_per_sentence", "max_token_chars", "max_text_chars",
                  "max_top_k", "max_sessions_per_key")
OPEN_ENDPOINTS = {"health.healthz", "health.readyz", "openapi_document", "web.index", "static", *docs.ENDPOINTS}


class ApiKeys:
    def __init__(self, spec: str):
        """``spec``: comma-separated ``name:key`` (or bare ``key``) entries; "" means no keys."""
        self.names: list[str] = []
        self._digests: list[bytes] = []
        for position, entry in enumerate(filter(None, (part.strip() for part in spec.split(","))), start=1):
            name, separator, key = entry.partition(":")
            if not separator:
                name, key = f"key{position}", entry
            if not _NAME.fullmatch(name):
                raise ValueError(f"SEQTAG_API_KEYS entry {position}: the name must be letters, digits or ._- (at most 64)")
            if len(key) < MIN_KEY_CHARS:
                raise ValueError(f"SEQTAG_API_KEYS entry {position} ({name}): a key needs at least {MIN_KEY_CHARS} characters")
            if name in self.names:
                raise ValueError(f"SEQTAG_API_KEYS: the name {name!r} is given twice")
            self.names.append(name)
            self._digests.append(hashlib.sha256(key.encode()).digest())

    def __bool__(self) -> bool:
        return bool(self.names)

    def fingerprint(self, limits: dict[str, dict[str, int]] | None = None) -> str:
        """16 hex digits that differ when the keys, their names or their limits differ: hosts behind one load
        balancer compare theirs (``service.fleet``). Made from the keys' SHA-256 digests, never the keys."""
        keys = sorted((name, digest.hex()) for name, digest in zip(self.names, self._digests))
        text = json.dumps({"keys": keys, "limits": limits or {}}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def owner(self, presented: str) -> str | None:
        """The name of the key ``presented`` is, or None; constant time in what was presented."""
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        found = None
        for name, expected in zip(self.names, self._digests):
            if hmac.compare_digest(digest, expected) and found is None:  # no early exit
                found = name
        return found


def parse_key_limits(spec: str, keys: ApiKeys) -> dict[str, dict[str, int]]:
    """``SEQTAG_API_KEY_LIMITS`` -> {key name: {setting: value}}, checked against the keys and PER_KEY_LIMITS."""
    if not spec.strip():
        return {}
    try:
        limits = json.loads(spec)
    except json.JSONDecodeError as error:
        raise ValueError(f"SEQTAG_API_KEY_LIMITS: not JSON: {error}") from None
    if not isinstance(limits, dict):
        raise ValueError("SEQTAG_API_KEY_LIMITS: a JSON object by key name")
    for name, values in limits.items():
        if name not in keys.names:
            raise ValueError(f"SEQTAG_API_KEY_LIMITS: {name!r} is not the name of a key in SEQTAG_API_KEYS")
        if not isinstance(values, dict):
            raise ValueError(f"SEQTAG_API_KEY_LIMITS[{name!r}]: an object of limits")
        for setting, value in values.items():
            if setting not in PER_KEY_LIMITS:
                raise ValueError(f"SEQTAG_API_KEY_LIMITS[{name!r}]: {setting!r} is not a per-key limit "
                                 f"({', '.join(PER_KEY_LIMITS)})")
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"SEQTAG_API_KEY_LIMITS[{name!r}][{setting!r}]: a whole number >= 0")
    return limits


def current_settings() -> ServiceSettings:
    """The settings for the current request: the service's, with its key's own limits if it has some."""
    return g.get("key_settings") or current_app.extensions["seqtag.settings"]


def current_owner() -> str:
    """Who the current request is from: its key's name, or "" when the service has no keys."""
    return g.get("api_key_owner", "")


def init_app(app: Flask, keys: ApiKeys, settings: ServiceSettings) -> None:
    app.extensions["seqtag.api_keys"] = keys
    if keys:
        limits = parse_key_limits(settings.api_key_limits, keys)
        key_settings = {name: dataclasses.replace(settings, **values) for name, values in limits.items()}
        app.before_request(partial(_check_key, keys, key_settings))


def _check_key(keys: ApiKeys, key_settings: dict[str, ServiceSettings]):
    """Before every request: None lets it through, a 401 response stops it."""
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    owner = keys.owner(presented.strip()) if scheme.lower() == "bearer" and presented.strip() else None
    if owner is None:
        response = error_response(401, "unauthorized", "this route needs an API key: 'Authorization: Bearer <key>'")
        response.headers["WWW-Authenticate"] = 'Bearer realm="seqtag"'
        return response
    g.api_key_owner = owner
    if owner in key_settings:
        g.key_settings = key_settings[owner]
        request.max_content_length = g.key_settings.max_body_bytes  # before the body is read
    return None
