"""Bad JSON of any depth, size or encoding, sent to every route that reads a JSON body: always a 4xx in the one
error shape (never a 5xx), and what a route does accept (a UTF-8 byte-order mark, duplicate keys) it answers
as documented. The same cases go to a real gunicorn in ``tests/test_fuzz.py``.

- generated depths of nested arrays and objects, alone and inside each route's own field, around the
  documented limit (``service.json_body.MAX_JSON_DEPTH``), the parser's own limit (about 200) and far beyond;
- long strings, long keys, bodies around the size limit;
- odd encodings: UTF-16/32 with and without byte-order marks, a UTF-8 BOM, invalid UTF-8, lone surrogate
  escapes, raw control characters, ``NaN``/``Infinity``, numbers out of a double's range, 10,000-digit
  integers, a charset other than UTF-8;
- a Hypothesis property: arbitrary bytes, and JSON values in random encodings, mutated, as the body of
  every JSON route.
"""

from __future__ import annotations

import codecs
import json
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reliability import record
from service import create_app
from service.json_body import MAX_JSON_DEPTH

MAX_BODY = 1 << 20  # the service's default body limit (SEQTAG_MAX_BODY_BYTES)

# (route, a valid body's field that the nested value replaces, a valid body)
ROUTES = {
    "tag": ("/v1/models/pos:tag", "sentences", {"sentences": [["The", "dog", "barks", "."]]}),
    "create": ("/v1/dialogs", "model", {"model": "dialog-act"}),
    "turn": ("/v1/dialogs/{session}/turns", "tokens", {"tokens": ["Do", "you", "have", "pets", "?"], "speaker": "A"}),
}


def nested(depth: int, kind: str) -> bytes:
    """A value of exactly ``depth`` nested arrays / objects / both, innermost holding ``1``."""
    if kind == "array":
        return b"[" * depth + b"1" + b"]" * depth
    if kind == "object":
        return b'{"a":' * depth + b"1" + b"}" * depth
    half = depth // 2  # objects around arrays
    return b'{"a":' * half + b"[" * (depth - half) + b"1" + b"]" * (depth - half) + b"}" * half


def in_field(field: str, value: bytes) -> bytes:
    return b'{"' + field.encode() + b'": ' + value + b"}"


DEPTHS = sorted({1, 2, 3, 8, MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 64, 199, 200, 201, 202, 1000,
                 10_000, 100_000})


def bad_bodies(field: str) -> list[tuple[str, bytes, str | None]]:
    """(case name, body, the error code it must get, or None where any answer but a 5xx will do) for a route
    whose body holds ``field``; sent with ``Content-Type: application/json``."""
    cases: list[tuple[str, bytes, str | None]] = []
    for depth in DEPTHS:
        for kind in ("array", "object", "mixed"):
            expect = "json_too_deep" if depth > MAX_JSON_DEPTH else None
            cases.append((f"{kind} nested {depth} deep", nested(depth, kind), expect))
            # inside the route's own field the body is one level deeper
            cases.append((f"{kind} nested {depth} deep in {field}", in_field(field, nested(depth, kind)),
                          "json_too_deep" if depth + 1 > MAX_JSON_DEPTH else None))
    # Cut short: the parser meets the end first (invalid_json), or its own depth limit first (json_too_deep).
    cases += [(f"unclosed {depth} deep", b"[" * depth, expect)
              for depth, expect in ((1, "invalid_json"), (100, "invalid_json"), (100_000, "json_too_deep"))]
    long = "x" * (MAX_BODY - 100)
    cases += [
        ("a string of almost 1 MiB", in_field(field, json.dumps([long]).encode()), None),
        ("a key of almost 1 MiB", json.dumps({long: 1}).encode(), "invalid_request"),
        ("a body over the size limit", in_field(field, json.dumps(["x" * MAX_BODY]).encode()), "payload_too_large"),
        ("100,000 empty arrays", in_field(field, b"[" + b",".join([b"[]"] * 100_000) + b"]"), None),
        ("50,000 keys", json.dumps({f"k{i}": i for i in range(50_000)}).encode(), "invalid_request"),
        ("a lone high surrogate", in_field(field, rb'["\ud800"]'), "invalid_json"),
        ("a lone low surrogate", in_field(field, rb'["\udc00"]'), "invalid_json"),
        ("two high surrogates", in_field(field, rb'["\ud800\ud800"]'), "invalid_json"),
        ("a surrogate encoded in UTF-8", in_field(field, b'["\xed\xa0\x80"]'), "invalid_json"),
        ("an overlong UTF-8 slash", in_field(field, b'["\xc0\xaf"]'), "invalid_json"),
        ("a truncated UTF-8 sequence", in_field(field, b'["\xe2\x82"]'), "invalid_json"),
        ("latin-1 bytes", in_field(field, '["café"]'.encode("latin-1")), "invalid_json"),
        ("a raw NUL in a string", in_field(field, b'["a\x00b"]'), "invalid_json"),
        ("a raw newline in a string", in_field(field, b'["a\nb"]'), "invalid_json"),
        ("NaN", in_field(field, b"NaN"), "invalid_json"),
        ("Infinity", in_field(field, b"[Infinity]"), "invalid_json"),
        ("-Infinity", b'{"top_k": -Infinity}', "invalid_json"),
        ("1e999999", in_field(field, b"[1e999999]"), "invalid_json"),
        ("-1e999999", b'{"version": -1e999999}', "invalid_json"),
        ("1e-999999 (a zero)", in_field(field, b"[1e-999999]"), None),
        ("a 10,000-digit integer", in_field(field, b"[" + b"9" * 10_000 + b"]"), "invalid_json"),
        ("a 4,300-digit integer", b'{"version": ' + b"9" * 4300 + b"}", None),
        ("a 1e308 top_k", b'{"top_k": 1e308}', None),
        ("empty", b"", "invalid_json"),
        ("only whitespace", b" \r\n\t ", "invalid_json"),
        ("a NUL byte", b"\x00", "invalid_json"),
        ("null", b"null", None),
        ("a string", b'"sentences"', None),
        ("trailing garbage", in_field(field, b"[]") + b"}", "invalid_json"),
        ("two values", b"{} {}", "invalid_json"),
        ("a comment", b'{"a": 1 /* no */}', "invalid_json"),
        ("single quotes", b"{'a': 1}", "invalid_json"),
        ("a trailing comma", b'{"a": 1,}', "invalid_json"),
        ("a bare UTF-8 BOM", codecs.BOM_UTF8, "invalid_json"),
        ("two UTF-8 BOMs", codecs.BOM_UTF8 * 2 + b"{}", "invalid_json"),
    ]
    body = in_field(field, b'["x"]').decode()
    for encoding, bom in (("utf-16-le", b""), ("utf-16-be", b""), ("utf-16-le", codecs.BOM_UTF16_LE),
                          ("utf-16-be", codecs.BOM_UTF16_BE), ("utf-32-le", b""), ("utf-32-be", b""),
                          ("utf-32-le", codecs.BOM_UTF32_LE), ("utf-32-be", codecs.BOM_UTF32_BE)):
        cases.append((f"{encoding}{' with a BOM' if bom else ''}", bom + body.encode(encoding), "invalid_json"))
    return cases


@pytest.fixture(scope="module")
def app(tmp_path_factory, random_tagger_dir, random_dialog_dirs):
    models_dir = tmp_path_factory.mktemp("served")
    shutil.copytree(random_tagger_dir, models_dir / "pos" / "1")
    for name, directory in random_dialog_dirs.items():
        shutil.copytree(directory, models_dir / name / "1")
    app = create_app({"models_dir": str(models_dir), "poll_interval_seconds": 0, "request_log": False})
    yield app
    app.extensions["seqtag.registry"].close()


@pytest.fixture(scope="module")
def urls(app):
    """Each JSON route's URL, the turns route on a live session."""
    created = app.test_client().post("/v1/dialogs", json={"model": "dialog-act"})
    assert created.status_code == 201
    return {name: url.format(session=created.json["session_id"]) for name, (url, _, _) in ROUTES.items()}


def assert_answered(response, expect: str | None = None) -> None:
    """A 2xx, or a 4xx in the error shape (with code ``expect`` when given); never a 5xx."""
    assert response.status_code < 500, response.get_data(as_text=True)[:500]
    if expect is not None or response.status_code >= 400:
        body = response.get_json(silent=True)
        assert body is not None and set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
        assert isinstance(body["error"]["message"], str) and 0 < len(body["error"]["message"]) <= 400
        if expect is not None:
            assert response.status_code in (400, 413) and body["error"]["code"] == expect, body


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_bad_json_of_any_depth_size_or_encoding_gets_a_4xx(app, urls, route):
    client = app.test_client()
    cases = bad_bodies(ROUTES[route][1])
    for name, body, expect in cases:
        response = client.post(urls[route], data=body, content_type="application/json")
        try:
            assert_answered(response, expect)
        except AssertionError as error:
            raise AssertionError(f"{route}, {name}: {error}") from None
    assert len(cases) > 100


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_nesting_up_to_the_limit_parses(app, urls, route):
    """At the limit the body parses and the schema answers (its own 400); one level more is json_too_deep."""
    client = app.test_client()
    for kind in ("array", "object", "mixed"):
        at_limit = client.post(urls[route], data=nested(MAX_JSON_DEPTH, kind), content_type="application/json")
        assert at_limit.status_code == 400 and at_limit.json["error"]["code"] == "invalid_request"
        over = client.post(urls[route], data=nested(MAX_JSON_DEPTH + 1, kind), content_type="application/json")
        assert over.status_code == 400 and over.json["error"]["code"] == "json_too_deep"
        assert str(MAX_JSON_DEPTH) in over.json["error"]["message"]


def test_what_is_accepted_is_answered_as_documented(app, urls):
    client = app.test_client()
    valid = json.dumps(ROUTES["tag"][2]).encode()
    # A UTF-8 byte-order mark is ignored (RFC 8259 allows a parser to); the charset may be said.
    for body, content_type in ((codecs.BOM_UTF8 + valid, "application/json"),
                               (valid, "application/json; charset=utf-8"), (valid, "application/json; charset=UTF8")):
        response = client.post(urls["tag"], data=body, content_type=content_type)
        assert response.status_code == 200 and response.json["results"][0]["tokens"] == ["The", "dog", "barks", "."]
    # Any other charset is refused before the body is read.
    response = client.post(urls["tag"], data=valid, content_type="application/json; charset=latin-1")
    assert response.status_code == 415 and "UTF-8" in response.json["error"]["message"]
    # Duplicate keys: the last one counts, as in JSON.parse.
    response = client.post(urls["tag"], data=b'{"sentences": [["a"]], "sentences": [["b", "c"]]}',
                           content_type="application/json")
    assert response.status_code == 200 and response.json["results"][0]["tokens"] == ["b", "c"]
    # Escaped surrogate pairs are one character; an escaped NUL is a character like any other.
    response = client.post(urls["tag"], data=rb'{"sentences": [["\ud83d\ude00", "a\u0000b"]]}',
                           content_type="application/json")
    assert response.status_code == 200 and response.json["results"][0]["tokens"] == ["\U0001F600", "a\x00b"]
    # A float that is an integer is one (JSON Schema's integer); one out of range is a 400 from the schema.
    response = client.post(urls["tag"], data=b'{"sentences": [["a"]], "top_k": 2.0}', content_type="application/json")
    assert response.status_code == 200 and len(response.json["results"][0]["top_k"][0]) == 2
    response = client.post(urls["tag"], data=b'{"sentences": [["a"]], "top_k": 1e308}', content_type="application/json")
    assert response.status_code == 400 and response.json["error"]["code"] == "invalid_request"


# Bytes a body might be made of: anything, or JSON text built here (so that it may hold what a serializer would
# never write: lone surrogate escapes, NaN, 1e999999, 5,000-digit integers, nesting thousands deep), often in
# the shape of a route's own body, in a random encoding, with or without a byte-order mark, maybe mangled.
LITERALS = st.sampled_from(["null", "true", "false", "0", "-0", "2.0", "1e308", "1e999999", "-1e999999", "NaN",
                            "Infinity", "-Infinity", "9" * 5000, "1" * 4300, '"\\ud800"', '"\\udfff x"'])
STRINGS = st.text(st.characters(categories=("L", "M", "N", "P", "S", "Z", "C"))).map(json.dumps)  # "C": surrogates too
FIELDS = st.sampled_from(["sentences", "texts", "top_k", "model", "version", "tokens", "text", "speaker", "turn",
                          "system_actions"])
JSON_TEXT = st.recursive(
    LITERALS | STRINGS | st.integers().map(str) | st.floats(allow_nan=False, allow_infinity=False).map(repr),
    lambda inner: st.lists(inner, max_size=4).map(lambda items: "[" + ",".join(items) + "]")
    | st.lists(st.tuples(FIELDS.map(json.dumps) | STRINGS, inner), max_size=4).map(
        lambda pairs: "{" + ",".join(f"{key}:{value}" for key, value in pairs) + "}")
    | st.tuples(st.sampled_from(['{"sentences":[[%s]]}', '{"texts":[%s]}', '{"model":%s}', '{"tokens":[%s]}',
                                 '{"text":%s,"speaker":"A"}', '{"sentences":[["a"]],"top_k":%s}']), inner).map(
        lambda hole: hole[0] % hole[1]),
    max_leaves=20)
DEEP = st.tuples(st.integers(1, 5000), st.sampled_from(["array", "object", "mixed"])).map(
    lambda depth_kind: nested(*depth_kind).decode())
ENCODINGS = st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le",
                             "latin-1", "cp1252"])


@st.composite
def json_like_bytes(draw):
    text = draw(JSON_TEXT | DEEP)
    encoding = draw(st.sampled_from(["utf-8"] * 4) | ENCODINGS)
    data = text.encode(encoding, errors="surrogatepass" if encoding.startswith("utf") else "replace")
    if data and draw(st.booleans()):
        cut = draw(st.integers(0, len(data) - 1))
        data = data[:cut] + (bytes([draw(st.integers(0, 255))]) if draw(st.booleans()) else b"") + data[cut + 1:]
    if draw(st.integers(0, 3)) == 0:
        data = draw(st.sampled_from([b"[" * 1500, b'{"sentences":' * 50, codecs.BOM_UTF8, b" "])) + data
    return data


BODIES = st.binary(max_size=2000) | json_like_bytes() | json_like_bytes()
EXAMPLES_PER_ROUTE = 300


def test_any_bytes_as_the_body_of_every_json_route_never_get_a_5xx(app, urls):
    """Hypothesis: arbitrary bytes and mangled JSON as the body of each JSON route, sent as JSON."""
    client = app.test_client()
    sent: dict[str, int] = {}
    statuses: dict[int, int] = {}

    for route in sorted(ROUTES):
        @settings(max_examples=EXAMPLES_PER_ROUTE, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(body=BODIES)
        def post_anything(body):
            response = client.post(urls[route], data=body, content_type="application/json")
            assert_answered(response)
            sent[route] = sent.get(route, 0) + 1
            statuses[response.status_code // 100] = statuses.get(response.status_code // 100, 0) + 1

        post_anything()
    assert set(sent) == set(ROUTES) and all(count >= EXAMPLES_PER_ROUTE for count in sent.values())
    record("bad-json", 11, "Bad JSON to every JSON route: generated depths (to 100,000), long strings and keys, "
           "UTF-16/32, BOMs, invalid UTF-8, lone surrogates, NaN, 1e999999, 10,000-digit integers; and arbitrary or "
           "mangled bytes as bodies (Hypothesis)",
           f"{len(ROUTES)} routes x {len(bad_bodies('x'))} cases; {sum(sent.values()):,} Hypothesis bodies",
           "0 5xx: each a 4xx in the error shape (json_too_deep beyond "
           f"{MAX_JSON_DEPTH} levels), or an answer",
           ", ".join(f"{count:,} {kind}xx" for kind, count in sorted(statuses.items())))
