"""SGD service schemas: what a service is (its slots and intents, each described in words), read strictly.

The Schema-Guided Dialogue dataset describes every service by one JSON object (``schema-train.json`` holds a
list of them)::

    {"service_name": "Banks_1", "description": "...",
     "slots": [{"name": "account_type", "description": "...", "is_categorical": true,
                "possible_values": ["checking", "savings"]}, ...],
     "intents": [{"name": "CheckBalance", "description": "...", "is_transactional": false,
                  "required_slots": ["account_type"], "optional_slots": {"recipient_account_type": "checking"},
                  "result_slots": ["account_type", "balance"]}]}

A schema-guided model reads the descriptions, so a service it never saw in training can be added by sending its
schema (``service.services``). A schema arrives from clients as well as from files: every field is checked
strictly (a string where a bool belongs is an error, nothing is coerced), unknown fields are refused, and every
size is bounded by the limits below, so a schema cannot make the server encode megabytes of descriptions.

Every error names the field by its path: ``schema-x.json: [3].slots[2].description: field required`` (the
file, the item of its list, the dotted path with ``[i]`` for list items).

The server imports this module: it imports nothing from ``training`` but ``training.common.errors`` (no
TensorFlow, no Keras).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from training.common.errors import DataFormatError

# --- limits (the real SGD schemas use at most: 17 slots, 4 intents, 10 possible values of 21 characters,
# descriptions of 116 characters, slot names of 25 characters; tests/test_service_schema.py reads them all) ---
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]{0,63}$"  # service, slot and intent names: also safe as file names
NAME_RULE = "a letter, then at most 63 letters, digits or '_'"
MAX_DESCRIPTION_CHARS = 500
MAX_SLOTS = 64
MAX_INTENTS = 32
MAX_POSSIBLE_VALUES = 200  # per slot
MAX_VALUE_CHARS = 100  # a possible value, or an optional slot's default
MAX_SCHEMA_BYTES = 256 * 1024  # the canonical JSON of one schema (what is stored and hashed)
MAX_REPORTED_ERRORS = 5  # a message lists this many problems, then says how many more there were

Name = Annotated[str, Field(pattern=NAME_PATTERN, description=f"{NAME_RULE}")]
Description = Annotated[str, Field(min_length=1, max_length=MAX_DESCRIPTION_CHARS,
                                   description="what it is, in words: the model reads it")]
Value = Annotated[str, Field(min_length=1, max_length=MAX_VALUE_CHARS)]

# Frozen: one parsed schema is shared by every request thread (and cached by name), so nothing may change it.
_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True)


class SlotSchema(BaseModel):
    """One slot: a value the user or the service gives (``account_type``)."""

    model_config = ConfigDict(**_STRICT, json_schema_extra={
        # A categorical slot takes one of its listed values (the JSON Schema spelling of the rule checked below).
        "if": {"properties": {"is_categorical": {"const": True}}},
        "then": {"properties": {"possible_values": {"minItems": 1}}}})

    name: Name
    description: Description
    is_categorical: bool = Field(description="the slot takes one of possible_values")
    possible_values: list[Value] = Field(
        default_factory=list, max_length=MAX_POSSIBLE_VALUES, json_schema_extra={"uniqueItems": True},
        description="a categorical slot's values (at least one); a free-form slot may list examples (SGD's "
                    "Restaurants_1 lists five cuisines) or none")


class IntentSchema(BaseModel):
    """One intent: something the user wants done (``CheckBalance``), and the slots it takes and answers."""

    model_config = _STRICT

    name: Name
    description: Description
    is_transactional: bool = Field(False, description="it changes the world (a booking), not only looks something up")
    required_slots: list[Name] = Field(default_factory=list, max_length=MAX_SLOTS,
                                       description="slots of this service that the intent needs")
    optional_slots: dict[Name, Value] = Field(default_factory=dict, max_length=MAX_SLOTS,
                                              description="slots of this service it may take, with their defaults",
                                              # pydantic writes the keys' pattern as patternProperties only, which
                                              # lets other keys through; the document must refuse them as we do
                                              json_schema_extra={"propertyNames": {"pattern": NAME_PATTERN}})
    result_slots: list[Name] = Field(default_factory=list, max_length=MAX_SLOTS,
                                     description="slots of this service that its results fill")


class ServiceSchema(BaseModel):
    """One SGD service: its name, description, slots and intents."""

    model_config = _STRICT

    # schema_digest's answer, computed once: the schema is frozen, and the digest is part of every encoding lookup.
    # Set when the schema is validated, so that equal schemas stay equal (pydantic compares private attributes).
    _digest: str | None = PrivateAttr(None)

    service_name: Name = Field(description="e.g. Banks_1")
    description: Description
    slots: list[SlotSchema] = Field(max_length=MAX_SLOTS)
    intents: list[IntentSchema] = Field(min_length=1, max_length=MAX_INTENTS)

    @model_validator(mode="after")
    def _consistent(self) -> "ServiceSchema":
        problems = _rule_problems(self)
        if problems:
            # Each problem carries its own path (the rules span fields); ``_messages`` reads them from the context.
            raise PydanticCustomError("service_schema", "{summary}",
                                      {"summary": "; ".join(f"{_path(loc)}: {m}" for loc, m in problems),
                                       "problems": problems})
        schema_digest(self)
        return self

    def to_json(self) -> dict[str, Any]:
        """The SGD object, every field written out (defaults included): what ``parse_schema`` reads back."""
        return self.model_dump(mode="json")

    @property
    def slot_names(self) -> list[str]:
        return [slot.name for slot in self.slots]

    @property
    def intent_names(self) -> list[str]:
        return [intent.name for intent in self.intents]


def _rule_problems(schema: ServiceSchema) -> list[tuple[tuple, str]]:
    """What JSON types cannot say: names given twice, slots an intent names that the service lacks, a categorical
    slot without values. As (location, message) pairs."""
    problems: list[tuple[tuple, str]] = []

    def once(names: list[str], where, what: str) -> None:
        """``where(i)``: the location of the i-th name."""
        seen: set[str] = set()
        for i, name in enumerate(names):
            if name in seen:
                problems.append((where(i), f"{what} {name!r} is given twice"))
            seen.add(name)

    once(schema.slot_names, lambda i: ("slots", i, "name"), "the slot")
    once(schema.intent_names, lambda i: ("intents", i, "name"), "the intent")
    slots = set(schema.slot_names)
    for i, slot in enumerate(schema.slots):
        if slot.is_categorical and not slot.possible_values:
            problems.append((("slots", i, "possible_values"), "a categorical slot needs its possible values"))
        once(slot.possible_values, lambda j, i=i: ("slots", i, "possible_values", j), "the value")
    for i, intent in enumerate(schema.intents):
        for field in ("required_slots", "result_slots", "optional_slots"):
            for j, name in enumerate(getattr(intent, field)):
                if name not in slots:
                    where = ("intents", i, field, name) if field == "optional_slots" else ("intents", i, field, j)
                    problems.append((where, f"{name!r} is not a slot of this service"))
    return problems


class SchemaError(DataFormatError):
    """A schema (or a file of them) that is not valid; the message names each problem's field path.

    ``path`` is where it came from ("" for a request body: then the message starts with the field path) and
    ``problems`` every problem as ``field.path: message`` (the message lists the first ``MAX_REPORTED_ERRORS``).
    """

    def __init__(self, path: str, problems: list[str]):
        self.problems = problems
        message = "; ".join(problems[:MAX_REPORTED_ERRORS])
        if len(problems) > MAX_REPORTED_ERRORS:
            message += f"; and {len(problems) - MAX_REPORTED_ERRORS} more"
        super().__init__(path, None, message)
        if not self.path:  # DataFormatError writes "<path>: "; a body has no path
            self.args = (message,)


def _path(loc: tuple) -> str:
    """pydantic's location as a path: ``("slots", 2, "description")`` -> ``slots[2].description``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = str(part) if len(str(part)) <= 100 else str(part)[:100] + "…"  # an unknown key may be huge
            out += f".{text}" if out else text
    return out


def _joined(prefix: str, path: str) -> str:
    if not prefix:
        return path
    if not path:
        return prefix
    return prefix + path if path.startswith("[") else f"{prefix}.{path}"


def _messages(error: ValidationError, prefix: str) -> list[str]:
    messages = []
    for item in error.errors(include_url=False, include_input=False):
        loc = tuple(item["loc"])
        if item["type"] == "service_schema":
            messages += [f"{_joined(prefix, _path(loc + tuple(where)))}: {text}"
                         for where, text in item["ctx"]["problems"]]
            continue
        if item["type"] == "string_pattern_mismatch":
            text = f"not a valid name: {NAME_RULE}"
        elif item["type"] in ("model_type", "model_attributes_type", "dict_type"):
            text = "should be a JSON object"  # not pydantic's "a valid dictionary or instance of SlotSchema"
        else:
            text = item["msg"]
            text = text[:1].lower() + text[1:]  # "Field required" -> "field required"
        where = _joined(prefix, _path(loc))
        messages.append(f"{where}: {text}" if where else text)
    return messages


def _validate(obj: object, path: str, index: int | None) -> ServiceSchema:
    prefix = f"[{index}]" if index is not None else ""
    try:
        schema = ServiceSchema.model_validate(obj)
    except ValidationError as error:
        raise SchemaError(path, _messages(error, prefix)) from None
    size = len(canonical_json(schema).encode("utf-8"))
    if size > MAX_SCHEMA_BYTES:
        where = f"{prefix}: " if prefix else ""
        raise SchemaError(path, [f"{where}the schema is {size} bytes as JSON, at most {MAX_SCHEMA_BYTES}"])
    return schema


def parse_schema(obj: object, where: str = "") -> ServiceSchema:
    """One schema object (parsed JSON) as a ``ServiceSchema``, or ``SchemaError``. ``where`` names its source (a
    file) at the head of the message; "" (a request body) leaves the field path first:
    ``slots[2].description: field required``."""
    return _validate(obj, where, None)


def read_schemas(path: str | os.PathLike) -> list[ServiceSchema]:
    """The schemas of a file: a JSON list of schema objects (as SGD's ``schema-train.json``) or one object.
    Every item is checked and the errors of all of them reported together; a service named twice is an error."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise SchemaError(str(path), [f"cannot read it: {error}"]) from None
    except json.JSONDecodeError as error:
        raise SchemaError(str(path), [f"not JSON: {error}"]) from None
    if isinstance(data, dict):
        return [_validate(data, str(path), None)]
    if not isinstance(data, list):
        raise SchemaError(str(path), [f"a list of service schemas (or one schema object), not {type(data).__name__}"])
    schemas, problems, first = [], [], {}
    for i, item in enumerate(data):
        try:
            schema = _validate(item, str(path), i)
        except SchemaError as error:
            problems += error.problems
            continue
        if schema.service_name in first:
            problems.append(f"[{i}].service_name: {schema.service_name!r} is also the name of item "
                            f"[{first[schema.service_name]}]")
        first.setdefault(schema.service_name, i)
        schemas.append(schema)
    if problems:
        raise SchemaError(str(path), problems)
    return schemas


def canonical_json(schema: ServiceSchema) -> str:
    """The schema as one JSON text that depends on its content only: keys sorted, no spaces, every default
    written out (a schema sent without its defaults is the same schema)."""
    return json.dumps(schema.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def schema_digest(schema: ServiceSchema) -> str:
    """16 hex digits of the SHA-256 of ``canonical_json``: equal schemas have equal digests."""
    if schema._digest is None:
        schema._digest = hashlib.sha256(canonical_json(schema).encode("utf-8")).hexdigest()[:16]
    return schema._digest
