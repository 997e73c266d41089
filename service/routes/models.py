"""``/v1/models``: list models, show one, and tag sentences with ``POST /v1/models/<name>:tag``."""

from __future__ import annotations

import numpy as np
from flask import Blueprint, current_app, jsonify, request
from werkzeug.routing import BaseConverter

from service.auth import current_settings
from service.errors import APIError
from service.json_body import json_body
from service.openapi import BODY_ERRORS, documented
from service.registry import MODEL_NAME, ModelLookupError, ModelRegistry
from service.services import span_condition
from service.schemas import (MAX_VERSION, ErrorResponse, ModelList, ModelStatus, TagRequest, TagResponse, VersionQuery,
                             check_limits, parse_tag_request)
from training.tagger.saved_tagger import Span, TaggedTokens

bp = Blueprint("models", __name__, url_prefix="/v1/models")


class ModelNameConverter(BaseConverter):
    """Model names in URLs: letters, digits, '_', '.', '-' (so ':tag' is never part of a name)."""

    regex = MODEL_NAME.pattern


def _registry() -> ModelRegistry:
    return current_app.extensions["seqtag.registry"]


def _lookup(name: str, version: int | None = None):
    try:
        return _registry().get(name, version)
    except ModelLookupError as error:
        raise APIError(503 if error.code == "model_unavailable" else 404, error.code, str(error)) from None


def _requested_version() -> int | None:
    raw = request.args.get("version")
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > len(str(MAX_VERSION)):
        raise APIError(400, "invalid_request", f"version must be a positive integer, not {raw!r}")
    return int(raw)


@bp.get("")
@documented(tags=("models",), HTTP_200=ModelList)
def list_models():
    """Every model found, with its versions, labels and dev metrics."""
    registry = _registry()
    return jsonify({"models": [registry.status(name) for name in registry.names()]})


@bp.get("/<model_name:name>")
@documented(tags=("models",), HTTP_200=ModelStatus, HTTP_404=ErrorResponse)
def show_model(name: str):
    """One model's status: serving and pinned version, loaded and rejected versions, labels, dev metrics."""
    try:
        return jsonify(_registry().status(name))
    except ModelLookupError as error:
        raise APIError(404, error.code, str(error)) from None


@bp.post("/<model_name:name>:tag")
@documented(json=TagRequest, query=VersionQuery, tags=("models",), HTTP_200=TagResponse, HTTP_404=ErrorResponse,
            HTTP_503=ErrorResponse, **BODY_ERRORS)
def tag(name: str):
    """Tag pre-tokenized sentences or raw texts; ``?version=N`` asks for a loaded version."""
    settings = current_settings()
    version = _requested_version()
    body = parse_tag_request(json_body())
    check_limits(body, settings)
    model = _lookup(name, version)  # held until the response is built, whatever the registry does meanwhile
    if model.kind != "tagger":
        raise APIError(400, "not_a_tagger", f"model {name!r} is a {model.kind} model; it does not tag sentences")
    if body.service is not None and not model.spans:
        raise APIError(400, "invalid_request", f"service: only span models take one; {name!r} is not one")
    condition = span_condition(model, body.service) if model.spans else None  # 404 for a service nobody knows

    offsets = boundaries = None
    if body.texts is not None:
        # Each text is cut into sentences and words by the model's tokenizer, and each sentence is one model
        # input, as the model was trained. A raw text is bounded by its characters, not its tokens: a sentence
        # longer than a model input is tagged in consecutive pieces of max_tokens_per_sentence.
        split = [model.tokenizer.sentences(text) for text in body.texts]
        for i, parts in enumerate(split):
            if not parts:
                raise APIError(400, "invalid_request", f"texts.{i}: no tokens in this text (only blank characters)")
        step = settings.max_tokens_per_sentence
        pieces = [(i, [t.text for t in sentence[start:start + step]])
                  for i, parts in enumerate(split) for sentence in parts for start in range(0, len(sentence), step)]
        tagged_pieces = model.tag([words for _, words in pieces], condition)
        by_text: list[list[TaggedTokens]] = [[] for _ in split]
        for (i, _), piece in zip(pieces, tagged_pieces):  # in order within each text
            by_text[i].append(piece)
        tagged = [join_pieces(ps) for ps in by_text]
        sentences = [[t.text for sentence in parts for t in sentence] for parts in split]
        offsets = [[[t.start, t.end] for sentence in parts for t in sentence] for parts in split]
        boundaries = []
        for parts in split:  # each sentence's [first, end) token indices
            ends = np.cumsum([len(sentence) for sentence in parts]).tolist()
            boundaries.append([[start, end] for start, end in zip([0, *ends[:-1]], ends)])
    else:
        sentences = body.sentences
        tagged = model.tag(sentences, condition)

    labels = model.labels
    results = []
    for i, (tokens, result) in enumerate(zip(sentences, tagged)):
        item = {"tokens": tokens, "tags": result.tags, "scores": [round(s, 6) for s in result.scores]}
        if offsets is not None:
            item["offsets"] = offsets[i]
            item["sentences"] = boundaries[i]
        if result.spans is not None:  # character offsets into a text; token indices into a sentence
            if offsets is not None:
                text, at = body.texts[i], offsets[i]
                item["spans"] = [{"label": s.label, "start": at[s.start][0], "end": at[s.end - 1][1],
                                  "text": text[at[s.start][0]:at[s.end - 1][1]], "score": round(s.score, 6)}
                                 for s in result.spans]
            else:
                item["spans"] = [{"label": s.label, "start": s.start, "end": s.end, "text": " ".join(tokens[s.start:s.end]),
                                  "score": round(s.score, 6)} for s in result.spans]
        if body.top_k:
            best = np.argsort(-result.probabilities, axis=-1)[:, :body.top_k]
            columns = result.columns or labels  # a schema-guided model's columns are the service's own tags
            item["top_k"] = [[{"tag": columns[k], "score": round(float(row[k]), 6)} for k in ks]
                             for row, ks in zip(result.probabilities, best)]
        results.append(item)
    return jsonify({"model": {"name": model.name, "version": model.version}, "results": results})


def join_pieces(pieces: list[TaggedTokens]) -> TaggedTokens:
    """The model's answers for consecutive pieces of one text (its sentences, and pieces of long ones) as one: the
    tags, scores and probabilities end to end, the spans moved to the text's token indices."""
    spans, offset = [], 0
    for piece in pieces:
        spans += [Span(s.label, s.start + offset, s.end + offset, s.score) for s in piece.spans or ()]
        offset += len(piece.tags)
    return TaggedTokens([tag for p in pieces for tag in p.tags], [score for p in pieces for score in p.scores],
                        np.concatenate([p.probabilities for p in pieces]),
                        spans if pieces and pieces[0].spans is not None else None,
                        pieces[0].columns if pieces else None)
