"""``/v1/dialogs``: streaming dialog sessions, one turn at a time, each with its own recurrent state.

A session keeps the model version it was opened on: a hot reload serves new sessions the new version and
leaves live ones alone; a turn for a session whose version has been unloaded gets 409 (reset it to move to
the serving version). Turns of different sessions that arrive together go through one ``step`` call (the
model version's micro-batcher stacks their states).
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
from flask import Blueprint, current_app, jsonify

from service.auth import current_owner, current_settings
from service.errors import APIError
from service.registry import ModelLookupError, ModelRegistry, ModelVersion, StepRequest
from service.openapi import BODY_ERRORS, documented
from service.schemas import (CreateDialogRequest, DialogSession, DialogView, ErrorResponse, TurnRequest, TurnResult,
                             check_tokens, json_body, parse_body)
from service.sessions import SessionNotFound, SessionState, SessionStore, new_session_id
from training.saved_dialog import DialogTurnInput
from training.tokenizer import tokenize

bp = Blueprint("dialogs", __name__, url_prefix="/v1/dialogs")


def _registry() -> ModelRegistry:
    return current_app.extensions["seqtag.registry"]


def _sessions() -> SessionStore:
    return current_app.extensions["seqtag.sessions"]


def _dialog_model(name: str, version: int | None) -> ModelVersion:
    try:
        model = _registry().get(name, version)
    except ModelLookupError as error:
        raise APIError(503 if error.code == "model_unavailable" else 404, error.code, str(error)) from None
    if model.kind != "dialog":
        raise APIError(400, "not_a_dialog_model", f"model {name!r} is a {model.kind} model, not a dialog model")
    return model


def _session_view(state: SessionState) -> dict:
    return {"session_id": state.session_id, "model": {"name": state.model, "version": state.version},
            "turn": state.turn, "created": state.created, "last_active": state.last_active}


def _not_found(session_id: str) -> APIError:
    return APIError(404, "session_not_found", f"no session {session_id!r} (unknown, deleted or expired)")


def _own(state: SessionState) -> SessionState:
    """``state`` if the request's API key opened it; another key's session is as good as missing (404)."""
    if state.owner != current_owner():
        raise SessionNotFound(state.session_id)
    return state


@bp.post("")
@documented(json=CreateDialogRequest, tags=("dialogs",), HTTP_201=DialogSession, HTTP_404=ErrorResponse,
            HTTP_429=ErrorResponse, HTTP_503=ErrorResponse, **BODY_ERRORS)
def create_dialog():
    """Open a session on a dialog model: a zero recurrent state, turn 0."""
    body = parse_body(CreateDialogRequest, json_body())
    model = _dialog_model(body.model, body.version)
    owner, limit = current_owner(), current_settings().max_sessions_per_key
    if owner and limit and _sessions().count_owned(owner) >= limit:
        raise APIError(429, "too_many_sessions", f"this API key holds {limit} live sessions, its limit: delete one "
                                                 f"(DELETE /v1/dialogs/<id>) or let one expire")
    units = model.dialog.state_size
    state = SessionState(new_session_id(), model.name, model.version, np.zeros(units, np.float32),
                         np.zeros(units, np.float32), owner=owner)
    _sessions().create(state)
    return jsonify({"session_id": state.session_id, "model": {"name": model.name, "version": model.version},
                    "turn": 0}), 201


@bp.post("/<session_id>/turns")
@documented(json=TurnRequest, tags=("dialogs",), HTTP_200=TurnResult, HTTP_404=ErrorResponse, HTTP_409=ErrorResponse,
            **BODY_ERRORS)
def post_turn(session_id: str):
    """Take the next turn: its act (or the system's next actions), and the session's state moves on."""
    settings = current_settings()
    body = parse_body(TurnRequest, json_body())
    if body.text is not None:
        if len(body.text) > settings.max_text_chars:
            raise APIError(400, "text_too_long", f"text: {len(body.text)} characters, at most {settings.max_text_chars}")
        tokens = [token.text for token in tokenize(body.text)][:settings.max_tokens_per_sentence]
    else:
        check_tokens(body.tokens, settings, "tokens")
        tokens = body.tokens
    answer: dict = {}

    def take_turn(state: SessionState) -> SessionState:
        # Runs inside the store's atomic update: if anything here raises, the session is unchanged.
        _own(state)
        try:
            model = _registry().get(state.model, state.version)
        except ModelLookupError:
            raise APIError(409, "version_unloaded", f"this session runs {state.model} version {state.version}, which is "
                                                     f"no longer loaded; reset the session to continue on the serving "
                                                     f"version") from None
        dialog = model.dialog
        previous = body.system_actions if body.system_actions is not None else state.last_actions
        if body.system_actions is not None and not dialog.multi_label:
            raise APIError(400, "invalid_request", "system_actions: only action models take them")
        if previous is not None:
            unknown = sorted(set(previous) - set(dialog.labels))
            if body.system_actions is not None and unknown:
                raise APIError(400, "unknown_action", f"system_actions: not labels of this model: {', '.join(unknown[:10])}")
        turn = DialogTurnInput(tokens, body.speaker, previous)
        result = model.step([StepRequest(turn, state.state_h, state.state_c)])[0]
        decision = dialog.decide(result.probabilities)
        scores = {label: round(float(p), 6) for label, p in zip(dialog.labels, result.probabilities)}
        answer.update({"turn": state.turn + 1, ("labels" if dialog.multi_label else "label"): decision, "scores": scores})
        return replace(state, state_h=result.state_h, state_c=result.state_c, turn=state.turn + 1,
                       last_actions=decision if dialog.multi_label else None, last_active=time.time())

    try:
        _sessions().update(session_id, take_turn)
    except SessionNotFound:
        raise _not_found(session_id) from None
    return jsonify(answer)


@bp.post("/<session_id>/reset")
@documented(tags=("dialogs",), HTTP_200=DialogSession, HTTP_404=ErrorResponse, HTTP_503=ErrorResponse)
def reset_dialog(session_id: str):
    """Back to turn 0 with a zero state, on the model's serving version (a new conversation)."""
    def start_over(state: SessionState) -> SessionState:
        _own(state)
        model = _dialog_model(state.model, None)
        units = model.dialog.state_size
        return replace(state.reset(), version=model.version, state_h=np.zeros(units, np.float32),
                       state_c=np.zeros(units, np.float32))

    try:
        state = _sessions().update(session_id, start_over)
    except SessionNotFound:
        raise _not_found(session_id) from None
    return jsonify({"session_id": session_id, "model": {"name": state.model, "version": state.version},
                    "turn": state.turn})


@bp.get("/<session_id>")
@documented(tags=("dialogs",), HTTP_200=DialogView, HTTP_404=ErrorResponse)
def show_dialog(session_id: str):
    """The session's model version, turn count and times."""
    try:
        return jsonify(_session_view(_own(_sessions().get(session_id))))
    except SessionNotFound:
        raise _not_found(session_id) from None


@bp.delete("/<session_id>")
@documented(tags=("dialogs",), HTTP_204=None, HTTP_404=ErrorResponse)
def delete_dialog(session_id: str):
    """End the session and forget its state."""
    try:
        _own(_sessions().get(session_id))
    except SessionNotFound:
        raise _not_found(session_id) from None
    if not _sessions().delete(session_id):
        raise _not_found(session_id)
    return "", 204
