"""The API's bodies as pydantic models: requests (validated strictly: a token must be a string, unknown
fields refused) and responses (the OpenAPI document is generated from both, ``service.openapi``).

The body is read by ``service.json_body`` (UTF-8 JSON, nesting and numbers bounded) before these models
see it. Size limits depend on the settings, so they are checked after parsing, by ``check_limits``. Responses are
built as plain dicts on the hot path; tests validate real responses against these models' schemas.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic.json_schema import SkipJsonSchema

from service.errors import APIError
from service.settings import ServiceSettings


def _integral(value: object) -> object:
    """JSON Schema's integer: 2.0 is one too (strict pydantic would refuse it); 2.5, "2" and true are not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


PositiveInt = Annotated[int, Field(ge=1), BeforeValidator(_integral)]
MAX_VERSION = 999_999_999  # model directories are numbered; nine digits are plenty (and parse cheaply)
Version = Annotated[int, Field(ge=1, le=MAX_VERSION), BeforeValidator(_integral)]


def exactly_one_of(model: BaseModel, first: str, second: str, what: str) -> None:
    """The two alternative inputs: one of them given, and not as null (the schema says so too)."""
    for name in (first, second):
        if name in model.model_fields_set and getattr(model, name) is None:
            raise ValueError(f"{name}: null is not allowed; leave the field out instead")
    if (getattr(model, first) is None) == (getattr(model, second) is None):
        raise ValueError(what)


def _no_null_default(schema: dict) -> None:
    """An alternative input's schema: absent by default, never null (a null default would contradict its type)."""
    schema.pop("default", None)


def one_of_required(first: str, second: str) -> dict:
    """The schema of 'exactly one of these two fields' (``exactly_one_of`` checks it)."""
    return {"oneOf": [{"required": [first]}, {"required": [second]}]}


class VersionQuery(BaseModel):
    """``?version=N``: a loaded version instead of the serving one (parsed by ``routes.models``)."""

    version: int | None = Field(None, ge=1, le=MAX_VERSION, description="a loaded version (default: the serving one)")


class TagRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=one_of_required("sentences", "texts"))

    sentences: list[list[str]] | SkipJsonSchema[None] = Field(None, description="pre-tokenized sentences",
                                                              json_schema_extra=_no_null_default)
    texts: list[str] | SkipJsonSchema[None] = Field(None, description="raw texts, tokenized by the service",
                                                    json_schema_extra=_no_null_default)
    top_k: PositiveInt | None = Field(None, description="also return the k best tags per token")
    service: str | None = Field(None, max_length=100,
                                description="span models: what the sentences are about (an SGD service such as "
                                            "Restaurants_1), which decides slot names that services share words for")

    @model_validator(mode="after")
    def exactly_one_input(self) -> "TagRequest":
        exactly_one_of(self, "sentences", "texts", "give exactly one of 'sentences' (lists of tokens) or 'texts' (strings)")
        return self


def describe_validation_error(error: ValidationError) -> str:
    """pydantic's first error as ``field.path: message`` (a field name from the body cut to 100 characters:
    an unknown key may be as long as the body)."""
    first = error.errors(include_url=False, include_input=False)[0]
    location = ".".join(str(part) if len(str(part)) <= 100 else str(part)[:100] + "…" for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    return f"{location}: {message}" if location else message


def parse_tag_request(body: object) -> TagRequest:
    try:
        return TagRequest.model_validate(body)
    except ValidationError as error:
        raise APIError(400, "invalid_request", describe_validation_error(error)) from None


def check_limits(request: TagRequest, settings: ServiceSettings) -> None:
    items = request.sentences if request.sentences is not None else request.texts
    field = "sentences" if request.sentences is not None else "texts"
    if not items:
        raise APIError(400, "invalid_request", f"{field}: empty; give at least one")
    if len(items) > settings.max_sentences:
        raise APIError(400, "too_many_sentences", f"{field}: {len(items)} given, at most {settings.max_sentences} per request")
    if request.top_k is not None and request.top_k > settings.max_top_k:
        raise APIError(400, "invalid_request", f"top_k: at most {settings.max_top_k}")
    if request.texts is not None:
        for i, text in enumerate(request.texts):
            if len(text) > settings.max_text_chars:
                raise APIError(400, "text_too_long", f"texts.{i}: {len(text)} characters, at most {settings.max_text_chars}")
        return
    for i, sentence in enumerate(request.sentences or []):
        check_tokens(sentence, settings, f"sentences.{i}")


def check_tokens(tokens: list[str], settings: ServiceSettings, where: str) -> None:
    if not tokens:
        raise APIError(400, "invalid_request", f"{where}: no tokens")
    if len(tokens) > settings.max_tokens_per_sentence:
        raise APIError(400, "sentence_too_long",
                       f"{where}: {len(tokens)} tokens, at most {settings.max_tokens_per_sentence}")
    for j, token in enumerate(tokens):
        if not token.strip():  # the document's token pattern says the same (service.openapi.BLANK_CHARACTERS)
            raise APIError(400, "invalid_token", f"{where}.{j}: a token must not be empty or blank")
        if len(token) > settings.max_token_chars:
            raise APIError(400, "token_too_long", f"{where}.{j}: {len(token)} characters, at most {settings.max_token_chars}")


class CreateDialogRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(description="a dialog model's name, e.g. dialog-act")
    version: Version | None = Field(None, description="a loaded version (default: the serving one)")
    slots: str | None = Field(None, description="a span model's name, e.g. slots: each turn also answers its slot "
                                                "values, in the same call")


class TurnRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=one_of_required("text", "tokens"))

    text: str | SkipJsonSchema[None] = Field(None, description="the turn's raw text, tokenized by the service",
                                             json_schema_extra=_no_null_default)
    tokens: list[str] | SkipJsonSchema[None] = Field(None, description="the turn, pre-tokenized",
                                                     json_schema_extra=_no_null_default)
    speaker: str = Field("", max_length=100, description="who speaks (as in the training data: A/B, USER, ...)")
    service: str | None = Field(None, max_length=100, description="sessions with a span model: the service the turn "
                                                                  "is about (an SGD service such as Restaurants_1)")
    system_actions: list[str] | None = Field(
        None, description="action models: what the system actually did last; without it the model's own last prediction stands in")
    top_k: PositiveInt | SkipJsonSchema[None] = Field(
        None, description="only the k highest scores in the answer's scores (all when absent)",
        json_schema_extra=_no_null_default)
    turn: PositiveInt | SkipJsonSchema[None] = Field(
        None, description="optional precondition: the number this turn gets (the session's turn + 1). The same "
                          "request sent again with the same number after a timeout or a 503 is answered as the "
                          "first time and taken once; any other number gets 409 turn_mismatch",
        json_schema_extra=_no_null_default)

    @model_validator(mode="after")
    def exactly_one_input(self) -> "TurnRequest":
        exactly_one_of(self, "text", "tokens", "give exactly one of 'text' (a string) or 'tokens' (a list of strings)")
        return self


def parse_body(schema: type[BaseModel], body: object) -> BaseModel:
    try:
        return schema.model_validate(body)
    except ValidationError as error:
        raise APIError(400, "invalid_request", describe_validation_error(error)) from None


# --- responses ---


class ErrorDetail(BaseModel):
    code: str = Field(description="stable and machine-readable, e.g. invalid_json, model_not_found")
    message: str = Field(description="for humans: what was wrong, naming the field")


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx answer has this shape."""

    error: ErrorDetail


class ModelRef(BaseModel):
    name: str
    version: int


class TopTag(BaseModel):
    tag: str
    score: float


class SpanOut(BaseModel):
    label: str
    start: int = Field(description="texts: the first character; sentences (pre-tokenized): the first token")
    end: int = Field(description="one past the last character (texts) or token (sentences)")
    text: str = Field(description="the span's text (pre-tokenized sentences: its tokens joined by spaces)")
    score: float = Field(description="the mean probability of the span's tags")


class TaggedSentence(BaseModel):
    tokens: list[str]
    tags: list[str] = Field(description="one tag per token")
    scores: list[float] = Field(description="the probability of each chosen tag")
    offsets: list[list[int]] | None = Field(None, description="texts only: [start, end) character offsets per token")
    sentences: list[list[int]] | None = Field(None, description="texts only: the sentences the model's tokenizer found, "
                                                                "each as [first, end) token indices; each was "
                                                                "tagged as one model input")
    top_k: list[list[TopTag]] | None = Field(None, description="with top_k: the k best tags per token, best first")
    spans: list[SpanOut] | None = Field(None, description="span models: the spans the tags spell (the tags are "
                                                           "decoded so that they always do: never an I- after O)")


class TagResponse(BaseModel):
    model: ModelRef = Field(description="the version that answered")
    results: list[TaggedSentence] = Field(description="one per input sentence or text, in order")


class VersionStatus(BaseModel):
    version: int
    state: Literal["AVAILABLE", "REJECTED"]
    loaded_at: float | None = None
    error: str | None = Field(None, description="REJECTED: why the version did not load or answer its warm-up")
    rejected_at: float | None = None


class ModelStatus(BaseModel):
    name: str
    kind: Literal["tagger", "dialog"] | None
    task: str | None = Field(None, description="what the model does: pos (a tag per token), spans (slot or entity "
                                               "spans), dialog-act, dialog-action")
    state: Literal["AVAILABLE", "UNAVAILABLE"]
    serving_version: int | None
    pinned_version: int | None
    runtime: Literal["onnx", "tensorflow"] | None = Field(None, description="what runs the serving version: ONNX "
                                                                            "Runtime's fast path, or its SavedModel")
    precision: Literal["float32", "int8"] | None = Field(None, description="int8: the model's pretrained "
                                                                          "encoder runs in int8 (SEQTAG_ENCODER_PRECISION)")
    fast_path_checked_against: Literal["saved_model", "cached_answers"] | None = Field(
        None, description="how this worker checked the serving version's fast path before serving it: against the "
                          "SavedModel, or (without TensorFlow) against the SavedModel's answers kept with the checked "
                          "weights in $SEQTAG_CACHE_DIR (SEQTAG_FAST_PATH_CACHE)")
    turn_vector_cache: dict[str, Any] | None = Field(None, description="an encoder dialog model's cache of turn "
                                                                       "vectors in this worker: turns, capacity, "
                                                                       "hits, misses, hit_rate")
    versions: list[VersionStatus]
    labels: list[str]
    metrics: dict[str, Any] = Field(description="dev figures from the serving version's metadata (numbers, and "
                                                "per-label tables such as the accuracy by tag)")


class ModelList(BaseModel):
    models: list[ModelStatus]


class DialogSession(BaseModel):
    session_id: str
    model: ModelRef
    slots: ModelRef | None = Field(None, description="the span model that answers each turn's slots, if any")
    turn: int = Field(description="turns taken so far")


class DialogView(DialogSession):
    created: float
    last_active: float


class TurnResult(BaseModel):
    turn: int = Field(description="this turn's number, from 1")
    label: str | None = Field(None, description="dialog-act models: the act of this utterance, as the model's label "
                                                "(SwDA: a SWBD-DAMSL code such as qy)")
    label_name: str | None = Field(None, description="dialog-act models: the act's name (SwDA: Yes-No-Question), from "
                                                     "the model's metadata; null when the model names no labels")
    labels: list[str] | None = Field(None, description="action models: the actions the system should take next")
    scores: dict[str, float] = Field(description="every label's probability (a turn of a service on an action model: "
                                                 "every candidate action of that service; top_k: the k highest)")
    slots: list[SpanOut] | None = Field(None, description="sessions with a span model: the turn's slot values (character "
                                                          "offsets into its text, or token indices for tokens)")


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready"]
    models: dict[str, int] = Field(description="each model's serving version")
