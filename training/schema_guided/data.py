"""SGD turns and service schemas as the schema-guided span tagger reads them.

A turn is its words (the named tokenizer's, as ``training.tagger.spans.read_sgd_spans`` cuts and checks them: a
bad line raises ``DataFormatError`` naming file and line), its service, and its slot spans over the words. A turn's
candidate labels are its service's *non-categorical* slots: SGD writes spans only for those (a categorical slot's
value is one of its ``possible_values``, not a span of the text), so those are the slots a span can name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from training.common.errors import DataFormatError
from training.common.service_schema import ServiceSchema, SlotSchema, read_schemas
from training.tagger.spans import read_sgd_spans, tags_to_spans


@dataclass(frozen=True)
class SchemaTurn:
    words: tuple[str, ...]
    service: str
    spans: tuple[tuple[str, int, int], ...]  # (slot, first word, one past the last word)


def span_slots(schema: ServiceSchema) -> list[SlotSchema]:
    """The slots a span of a turn of this service can name: its non-categorical ones, in schema order."""
    return [slot for slot in schema.slots if not slot.is_categorical]


def describe_slot(slot: SlotSchema) -> str:
    """What the encoder reads for a slot: its name as words, then its description ("kiln temperature : ...")."""
    return f"{slot.name.replace('_', ' ')} : {slot.description}"


def read_schema_files(paths: Sequence[str | Path]) -> dict[str, ServiceSchema]:
    """Every schema of the files, by service name (a service in two files must be the same schema)."""
    schemas: dict[str, ServiceSchema] = {}
    for path in paths:
        for schema in read_schemas(path):
            if schema.service_name in schemas and schemas[schema.service_name] != schema:
                raise DataFormatError(str(path), None, f"service {schema.service_name!r} differs from its schema in an "
                                                    f"earlier file")
            schemas[schema.service_name] = schema
    return schemas


def read_schema_turns(path: str | Path, schemas: dict[str, ServiceSchema], tokenizer: str = "ud-english",
                      only_candidates: bool = False) -> list[SchemaTurn]:
    """The turns of an SGD file whose service has a schema; a turn of a service none of ``schemas`` describes is an
    error naming the service (train with the schema files that describe your data). ``only_candidates`` (training)
    keeps only the spans of the service's span slots; scoring keeps every gold span (SGD dev has 215 of 26,761 that
    name another slot: a miss for any model that names only its service's slots)."""
    sentences, _ = read_sgd_spans(path, "bio", tokenizer)
    turns, missing = [], set()
    for sentence in sentences:
        schema = schemas.get(sentence.condition or "")
        if schema is None:
            missing.add(sentence.condition)
            continue
        names = {slot.name for slot in span_slots(schema)}
        spans = tuple(s for s in tags_to_spans(sentence.tags, "bio") if s[0] in names or not only_candidates)
        turns.append(SchemaTurn(sentence.words, schema.service_name, spans))
    if missing:
        raise DataFormatError(str(path), None, f"no schema for the service(s) {', '.join(sorted(map(str, missing))[:10])}: "
                                            f"give the schema files that describe them (--schemas)")
    return turns
