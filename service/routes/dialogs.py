"""``/v1/dialogs``: streaming dialog sessions, one turn at a time, each with its own recurrent state.

A session keeps the model version it was opened on: a hot reload serves new sessions the new version and
leaves live ones alone; a turn for a session whose version has been unloaded gets 409 (reset it to move to
the serving version). While the session store is unreachable every route here answers 503
``sessions_unavailable`` with ``Retry-After`` and changes nothing. A turn may carry its number
(``"turn": N``): sent again, it is answered again and taken once. Turns of different sessions that arrive
together go through one ``step`` call (the model version's micro-batcher stacks their states).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import replace

import numpy as np
from flask import Blueprint, current_app, jsonify

from service.auth import current_owner, current_settings
from service.errors import APIError, error_response
from service.json_body import json_body
from service.openapi import BODY_ERRORS, documented
from service.registry import ModelLookupError, ModelRegistry, ModelVersion, StepRequest
from service.schemas import (CreateDialogRequest, DialogSession, DialogView, ErrorResponse, TurnRequest, TurnResult,
                             check_tokens, parse_body)
from service.services import action_map, span_condition
from service.sessions import (SessionBusy, SessionLimitReached, SessionNotFound, SessionState, SessionStore,
                              SessionStoreUnavailable, new_session_id)
from training.dialog.saved_dialog import DialogTurnInput

bp = Blueprint("dialogs", __name__, url_prefix="/v1/dialogs")


@bp.errorhandler(SessionStoreUnavailable)
def _store_unavailable(error: SessionStoreUnavailable):
    # Nothing was written: the same request can be sent again once the store is back.
    response = error_response(503, "sessions_unavailable", f"{error}; dialog sessions are unavailable for now, "
                                                            "send the request again later (tagging is not affected)")
    response.headers["Retry-After"] = "1"
    return response


@bp.errorhandler(SessionBusy)
def _session_busy(error: SessionBusy):
    return error_response(409, "session_busy", f"{error}; send one turn at a time per session")


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
    return {**_session(state), "created": state.created, "last_active": state.last_active}


def _session(state: SessionState) -> dict:
    return {"session_id": state.session_id, "model": {"name": state.model, "version": state.version},
            "slots": {"name": state.slots, "version": state.slots_version} if state.slots else None, "turn": state.turn}


def _slot_model(name: str, version: int | None) -> ModelVersion:
    try:
        model = _registry().get(name, version)
    except ModelLookupError as error:
        raise APIError(503 if error.code == "model_unavailable" else 404, error.code, f"slots: {error}") from None
    if not model.spans:
        raise APIError(400, "not_a_span_model", f"slots: model {name!r} is a {model.kind} model, not a span model")
    return model


def _session_slots(state: SessionState, service: str | None) -> tuple[ModelVersion, object]:
    """The session's span model and what it tags this turn with (``span_condition``: a service's encoding, its name,
    or None), looked up once per turn; 409 if that version was unloaded, 404 for a service nobody registered."""
    try:
        model = _registry().get(state.slots, state.slots_version)
    except ModelLookupError:
        raise APIError(409, "version_unloaded", f"this session's slots come from {state.slots} version "
                                                 f"{state.slots_version}, which is no longer loaded; reset the session "
                                                 f"to continue on the serving version") from None
    return model, span_condition(model, service)


def _turn_slots(model: ModelVersion, condition, text: str | None, tokens: list[str]) -> list[dict]:
    """The turn's slot values from the session's span model: character offsets into its text, or token indices."""
    if text is not None:
        words = model.tokenizer.tokenize(text)[:current_settings().max_tokens_per_sentence]
        if not words:
            return []
        result = model.tag([[w.text for w in words]], condition)[0]
        return [{"label": s.label, "start": words[s.start].start, "end": words[s.end - 1].end,
                 "text": text[words[s.start].start:words[s.end - 1].end], "score": round(s.score, 6)}
                for s in result.spans]
    result = model.tag([tokens], condition)[0]
    return [{"label": s.label, "start": s.start, "end": s.end, "text": " ".join(tokens[s.start:s.end]),
             "score": round(s.score, 6)} for s in result.spans]


def request_digest(words: str | list[str], speaker: str, system_actions: list[str] | None) -> str:
    """What identifies a turn's input (its text, or its tokens), to tell a retry of the last turn from a different
    request."""
    return hashlib.sha256(json.dumps([words, speaker, system_actions]).encode()).hexdigest()[:32]


def _turn_answer(dialog, number: int, probabilities: np.ndarray, mapping=None, top_k: int | None = None) -> dict:
    """The turn's answer; with ``mapping`` (a turn of a service, on an action model) in the service's own labels."""
    decision = dialog.decide(probabilities)
    labels, scores = dialog.labels, probabilities
    if mapping is not None:
        decision = mapping.decide(decision, dialog.label_index)
        labels, scores = mapping.candidates, mapping.scores(probabilities)
    answer = {"turn": number, ("labels" if dialog.multi_label else "label"): decision}
    if not dialog.multi_label:
        answer["label_name"] = dialog.label_names.get(decision)  # None when the model names no labels
    order = np.argsort(-scores, kind="stable")[:top_k] if top_k else range(len(labels))
    answer["scores"] = {labels[k]: round(float(scores[k]), 6) for k in order}
    return answer


def _service_actions(dialog_version: ModelVersion, slots: ModelVersion | None, condition):
    """A turn of a service on an action model, in a session whose span model reads schemas: the map of the action
    model's labels onto the service's slots (None otherwise: the model's own labels)."""
    if slots is None or not slots.schema_guided or condition is None or not dialog_version.dialog.multi_label:
        return None
    return action_map(dialog_version, slots, condition)


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
    # Without a version asked for: the serving one, or, behind a load balancer, the newest every host can step
    version = body.version if body.version is not None else _registry().session_version(body.model)
    model = _dialog_model(body.model, version)
    slots = _slot_model(body.slots, None) if body.slots is not None else None
    owner, limit = current_owner(), current_settings().max_sessions_per_key
    units = model.dialog.state_size
    state = SessionState(new_session_id(), model.name, model.version, np.zeros(units, np.float32),
                         np.zeros(units, np.float32), owner=owner, slots=slots.name if slots else "",
                         slots_version=slots.version if slots else 0)
    try:
        _sessions().create(state, max_owned=limit if owner else 0)  # counts and writes in one atomic step
    except SessionLimitReached:
        raise APIError(429, "too_many_sessions", f"this API key holds {limit} live sessions, its limit: delete one "
                                                 f"(DELETE /v1/dialogs/<id>) or let one expire") from None
    return jsonify(_session(state)), 201


@bp.post("/<session_id>/turns")
@documented(json=TurnRequest, tags=("dialogs",), HTTP_200=TurnResult, HTTP_404=ErrorResponse, HTTP_409=ErrorResponse,
            HTTP_503=ErrorResponse, **BODY_ERRORS)
def post_turn(session_id: str):
    """Take the next turn: its act (or the system's next actions), and the session's state moves on."""
    settings = current_settings()
    body = parse_body(TurnRequest, json_body())
    if body.text is not None:
        if len(body.text) > settings.max_text_chars:
            raise APIError(400, "text_too_long", f"text: {len(body.text)} characters, at most {settings.max_text_chars}")
    else:
        check_tokens(body.tokens, settings, "tokens")
    answer: dict = {}
    digest = request_digest(body.text if body.text is not None else body.tokens, body.speaker, body.system_actions)

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
        slots, condition = _session_slots(state, body.service) if state.slots else (None, None)
        mapping = _service_actions(model, slots, condition)
        if body.turn is not None and body.turn != state.turn + 1:
            if body.turn == state.turn and state.last_request == digest and state.last_probabilities is not None:
                answer.update(_turn_answer(dialog, state.turn, state.last_probabilities, mapping, body.top_k))
                if state.slots:  # slots depend on the turn alone: the same answer again
                    answer["slots"] = _turn_slots(slots, condition, body.text, body.tokens)
                return state  # a retry of the turn already taken: its answer again, the state as it is
            raise APIError(409, "turn_mismatch", f"this session is at turn {state.turn}: a request for turn {body.turn} "
                                                 f"is neither the next turn nor a retry of the last one")
        tokens = body.tokens
        if body.text is not None:  # cut into words as the session's model was trained on them
            tokens = [token.text for token in dialog.tokenizer.tokenize(body.text)][:settings.max_tokens_per_sentence]
        previous = body.system_actions if body.system_actions is not None else state.last_actions
        if body.system_actions is not None and not dialog.multi_label:
            raise APIError(400, "invalid_request", "system_actions: only action models take them")
        if previous is not None:
            known = set(mapping.candidates) if mapping is not None else set(dialog.labels)
            unknown = sorted(set(previous) - known)
            if body.system_actions is not None and unknown:
                whose = f"of service {body.service}" if mapping is not None else "of this model"
                raise APIError(400, "unknown_action", f"system_actions: not labels {whose}: {', '.join(unknown[:10])}")
            if mapping is not None:  # the service's actions -> the model labels they stand for
                previous = mapping.to_model(previous)
        if body.service is not None and not state.slots:
            raise APIError(400, "invalid_request", "service: only sessions with a span model (slots) take one")
        turn = DialogTurnInput(tokens, body.speaker, previous)
        result = model.step([StepRequest(turn, state.state_h, state.state_c)])[0]
        answer.update(_turn_answer(dialog, state.turn + 1, result.probabilities, mapping, body.top_k))
        if state.slots:  # the span model's batcher stacks the concurrent sessions' turns, as the step's does
            answer["slots"] = _turn_slots(slots, condition, body.text, tokens)
        return replace(state, state_h=result.state_h, state_c=result.state_c, turn=state.turn + 1,
                       last_actions=answer.get("labels") if dialog.multi_label else None, last_active=time.time(),
                       last_request=digest, last_probabilities=np.asarray(result.probabilities, np.float32))

    try:
        _sessions().update(session_id, take_turn)
    except SessionNotFound:
        raise _not_found(session_id) from None
    return jsonify(answer)


@bp.post("/<session_id>/reset")
@documented(tags=("dialogs",), HTTP_200=DialogSession, HTTP_404=ErrorResponse, HTTP_409=ErrorResponse,
            HTTP_503=ErrorResponse)
def reset_dialog(session_id: str):
    """Back to turn 0 with a zero state, on the model's serving version (a new conversation)."""
    def start_over(state: SessionState) -> SessionState:
        _own(state)
        model = _dialog_model(state.model, None)
        slots_version = _slot_model(state.slots, None).version if state.slots else 0
        units = model.dialog.state_size
        return replace(state.reset(), version=model.version, state_h=np.zeros(units, np.float32),
                       state_c=np.zeros(units, np.float32), slots_version=slots_version)

    try:
        state = _sessions().update(session_id, start_over)
    except SessionNotFound:
        raise _not_found(session_id) from None
    return jsonify(_session(state))


@bp.get("/<session_id>")
@documented(tags=("dialogs",), HTTP_200=DialogView, HTTP_404=ErrorResponse, HTTP_503=ErrorResponse)
def show_dialog(session_id: str):
    """The session's model version, turn count and times."""
    try:
        return jsonify(_session_view(_own(_sessions().get(session_id))))
    except SessionNotFound:
        raise _not_found(session_id) from None


@bp.delete("/<session_id>")
@documented(tags=("dialogs",), HTTP_204=None, HTTP_404=ErrorResponse, HTTP_503=ErrorResponse)
def delete_dialog(session_id: str):
    """End the session and forget its state."""
    try:
        _own(_sessions().get(session_id))
    except SessionNotFound:
        raise _not_found(session_id) from None
    if not _sessions().delete(session_id):
        raise _not_found(session_id)
    return "", 204
