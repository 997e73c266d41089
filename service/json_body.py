"""Reading a request's JSON body: any bytes in, a parsed value or a 4xx out, never an exception that escapes.

The body is parsed by pydantic-core's JSON parser (``pydantic_core.from_json``, the one behind pydantic's
``model_validate_json``): it is written in Rust, so a deeply nested body cannot exhaust Python's recursion
limit (the standard library's decoder raises ``RecursionError`` at about 1,000 levels), and it is strict
where ``json`` is lenient: invalid UTF-8, lone surrogate escapes (``"\\ud800"``), raw control characters in
strings, ``NaN``/``Infinity`` and integers of more than 4,300 digits are all refused.

What this module adds, each answered 400 (or 415) in the service's one error shape:

* the body must be UTF-8 (RFC 8259, section 8.1); a leading UTF-8 byte-order mark is ignored, as the RFC
  allows; a UTF-16 or UTF-32 body, or a ``charset`` other than UTF-8 in ``Content-Type``, is refused with a
  message that says so (rather than the parser's "expected value at line 1 column 1");
* arrays and objects nest at most ``MAX_JSON_DEPTH`` levels (``json_too_deep``): the request bodies need 3,
  and the parser's own limit (about 200, not the same for arrays and objects) is a detail of its version;
* a number too large for a double (``1e999999``, which reads as infinity) is refused: a JSON number names a
  finite value.

Duplicate keys are not an error: the last one counts, as in JavaScript's ``JSON.parse`` and Python's ``json``.
"""

from __future__ import annotations

import codecs
import math

from flask import request
from pydantic_core import from_json

from service.errors import APIError

MAX_JSON_DEPTH = 32  # nested arrays and objects in a request body; the request schemas need 3

_UTF8_NAMES = {"utf-8", "utf8"}


def json_body() -> object:
    """The request's JSON body: 415 if it is not sent as (UTF-8) JSON, 400 if it does not parse."""
    if not request.is_json:
        raise APIError(415, "unsupported_media_type", "send the body as JSON with 'Content-Type: application/json'")
    charset = request.mimetype_params.get("charset")
    if charset is not None and charset.strip().lower() not in _UTF8_NAMES:
        raise APIError(415, "unsupported_media_type", f"JSON is read as UTF-8 (RFC 8259), not {charset[:40]!r}: "
                                                      "send the body as UTF-8")
    return parse_json(request.get_data(cache=False))


def parse_json(data: bytes) -> object:
    """``data`` as a JSON value, or ``APIError`` 400 (``invalid_json`` or ``json_too_deep``)."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in data[:4]:
        # A UTF-16 or UTF-32 text has a byte-order mark or a NUL byte among its first four bytes (its first
        # character is ASCII); a NUL byte is never valid in UTF-8 JSON, so nothing valid is refused here.
        raise APIError(400, "invalid_json", "the body must be JSON encoded as UTF-8 (RFC 8259); this one looks like "
                                            "UTF-16 or UTF-32")
    try:
        value = from_json(data, allow_inf_nan=False)
    except ValueError as error:
        message = str(error)
        if "recursion limit" in message:  # the parser's own limit, above ours: the same answer
            raise _too_deep() from None
        raise APIError(400, "invalid_json", f"the body is not valid JSON: {message[:200]}") from None
    _check_values(value)
    return value


def _too_deep() -> APIError:
    return APIError(400, "json_too_deep", f"the body nests arrays and objects more than {MAX_JSON_DEPTH} levels deep")


def _check_values(value: object) -> None:
    """Nesting depth and finite numbers, walking the containers without recursion (a loop and a stack)."""
    if type(value) is float and not math.isfinite(value):
        raise _not_finite()
    if type(value) is not list and type(value) is not dict:
        return
    stack = [(value, 1)]
    while stack:
        container, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise _too_deep()
        for item in (container.values() if type(container) is dict else container):
            kind = type(item)
            if kind is list or kind is dict:
                stack.append((item, depth + 1))
            elif kind is float and not math.isfinite(item):
                raise _not_finite()


def _not_finite() -> APIError:
    return APIError(400, "invalid_json", "the body is not valid JSON: a number is too large for a double "
                                         "(such as 1e999999)")
