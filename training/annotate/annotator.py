"""One shard in, its annotated output out: tokenize and split sentences (the first model's tokenizer), tag every
sentence with every model, write CoNLL-U or JSONL.

``AnnotatorSpec`` says what to build and pickles, so a worker process or a Ray actor builds its own ``Annotator``
(one model load per worker) from the same spec as the parent, and writes the same bytes.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from training.annotate import inputs
from training.annotate.inputs import Shard
from training.annotate.writers import (Sentence, SentenceSpan, Word, multiword_tokens, sentence_text,
                                       write_sentence)
from training.common import artifacts
from training.common.errors import ConfigError

logger = logging.getLogger(__name__)

_PARAGRAPH = re.compile(r"(?:[^\n]*\S[^\n]*(?:\n|$))+")  # a run of lines that are not blank
_UNSAFE_ID = re.compile(r"[\s/\\#]+")


@dataclass(frozen=True)
class AnnotatorSpec:
    models: tuple[str, ...]  # model directories: models/<name> (its highest version) or models/<name>/<version>
    input_format: str = "text"
    output_format: str = "conllu"
    service: str | None = None  # span models: the service (condition) every sentence is about
    schema_files: tuple[str, ...] = ()  # schema-guided span models: schemas of services they were not shipped with
    runtime: str = "onnx"
    precision: str = "int8"  # the fast path's LSTMs: int8 (the default here: 2x the tokens/s, same dev accuracy) or float32
    batch_size: int = 256


@dataclass
class ShardResult:
    index: int
    output: str
    documents: int
    sentences: int
    words: int
    bytes_read: int  # of input
    source: str = ""


@dataclass
class LoadedModel:
    name: str
    tagger: object  # SavedTagger or SavedSchemaTagger
    condition: object = None  # what every sentence is tagged with (span models)
    is_pos: bool = False
    spans: bool = False


def load_models(spec: AnnotatorSpec) -> list[LoadedModel]:
    from training.tagger.saved_tagger import SavedTagger

    loaded: list[LoadedModel] = []
    for given in spec.models:
        directory = artifacts.resolve_model_dir(given)
        metadata = artifacts.read_metadata(directory)
        if metadata.get("kind", "tagger") != "tagger":
            raise ConfigError(f"{given}: a {metadata.get('kind')} model; seqtag tag annotates with taggers "
                              "(POS and span models)")
        name = directory.parent.name
        if any(m.name == name for m in loaded):
            raise ConfigError(f"{given}: two models named {name!r}")
        if metadata.get("schema_guided"):
            from training.schema_guided.saved import SavedSchemaTagger

            tagger = SavedSchemaTagger(directory, metadata)
        else:
            tagger = SavedTagger(directory, metadata, runtime=spec.runtime, precision=spec.precision, fast_cache=True)
        model = LoadedModel(name, tagger, spans=bool(tagger.spans),
                            is_pos=metadata.get("task") == "pos" and metadata.get("tag_column", "upos") == "upos")
        if model.spans:
            model.condition = _condition(model, metadata, spec)
        loaded.append(model)
    if not loaded:
        raise ConfigError("give at least one --model")
    return loaded


def _condition(model: LoadedModel, metadata: dict, spec: AnnotatorSpec):
    """What a span model tags every sentence with: the service named by --service (a schema-guided model: that
    service's encoded schema, from the model's own schemas or --schemas)."""
    if getattr(model.tagger, "schema_guided", False):
        from training.common.service_schema import read_schemas

        schemas = dict(model.tagger.shipped)
        for path in spec.schema_files:
            schemas.update({s.service_name: s for s in read_schemas(Path(path))})
        if not spec.service:
            raise ConfigError(f"{model.name} reads a service's schema: give --service NAME (known: "
                              f"{', '.join(sorted(schemas))}; others with --schemas FILE)")
        if spec.service not in schemas:
            raise ConfigError(f"--service {spec.service}: no schema for it (known: {', '.join(sorted(schemas))}; "
                              "add its schema file with --schemas FILE)")
        return model.tagger.encode_service(schemas[spec.service])
    known = list(metadata.get("conditions") or [])
    if known and spec.service is None:
        raise ConfigError(f"{model.name} tags a service's slots: give --service (one of {', '.join(known)})")
    if spec.service is not None and known and spec.service not in known:
        raise ConfigError(f"--service {spec.service}: {model.name} knows {', '.join(known)}")
    return spec.service or ""


def document_key(document: str) -> str:
    """A document name as it can go in a ``sent_id`` (no whitespace, no slash: UD reserves it)."""
    return _UNSAFE_ID.sub("_", document).strip("_") or "doc"


class Annotator:
    def __init__(self, spec: AnnotatorSpec):
        self.spec = spec
        self.models = load_models(spec)
        self.tokenizer = self.models[0].tagger.tokenizer
        pos = [m.name for m in self.models if m.is_pos]
        self.upos_model = pos[0] if pos else None

    # --- shard -> sentences ---

    def _text_sentences(self, text: str, document: str, paragraphs_before: int, char_start: int,
                        starts_document: bool) -> list[Sentence]:
        sentences: list[Sentence] = []
        key = document_key(document)
        for number, match in enumerate(_PARAGRAPH.finditer(text), paragraphs_before + 1):
            offset = match.start()
            parts = self.tokenizer.sentences(match.group(0))
            base = char_start + offset
            for k, part in enumerate(parts, 1):
                # a sentence's last word is followed by the next sentence's first (or nothing: a space)
                following = [t.start for t in part[1:]] + [parts[k][0].start if k < len(parts) else -1]
                words = [Word(t.text, base + t.start, base + t.end, nxt != t.end) for t, nxt in zip(part, following)]
                sentence = Sentence(document, f"{key}-p{number}-s{k}", words, paragraph=number,
                                    new_document=starts_document and not sentences, new_paragraph=k == 1,
                                    multiwords=multiword_tokens(words))
                sentence.text = sentence_text(words)
                sentences.append(sentence)
        return sentences

    def _conllu_sentences(self, text: str, source: str) -> list[Sentence]:
        sentences = []
        for block in re.split(r"\n[^\S\n]*\n", text.replace("\r\n", "\n")):
            lines = [line for line in block.split("\n") if line != ""]
            if not any(not line.startswith("#") for line in lines):
                if lines:  # comments with no sentence after them (the end of a file): kept as they are
                    sentences.append(Sentence(source, None, [], lines=lines))
                continue
            words = [Word(line.split("\t")[1]) for line in lines
                     if not line.startswith("#") and line.split("\t")[0].isdigit()]
            comments = dict(line[2:].split(" = ", 1) for line in lines if line.startswith("# ") and " = " in line)
            sentences.append(Sentence(source, comments.get("sent_id"), words, lines=lines, text=comments.get("text"),
                                      new_document=any(line.startswith("# newdoc") for line in lines)))
        return sentences

    def shard_sentences(self, shard: Shard, text: str) -> tuple[list[Sentence], int]:
        """The shard's sentences, untagged, and the number of documents it starts."""
        if shard.input_format == "text":
            return (self._text_sentences(text, shard.source, shard.paragraphs_before, shard.char_start,
                                         shard.starts_document), int(shard.starts_document))
        if shard.input_format == "conllu":
            sentences = self._conllu_sentences(text, shard.source)
            return sentences, max(sum(s.new_document for s in sentences), int(shard.starts_document))
        sentences, documents = [], 0
        for line, record in inputs.iter_documents_json(text, shard.first_line):
            document = str(record["id"]) if "id" in record else f"{shard.source}:{line}"
            sentences += self._text_sentences(record["text"], document, 0, 0, True)
            documents += 1
        return sentences, documents

    # --- tagging ---

    def tag(self, sentences: list[Sentence]) -> None:
        """Fill every word's tags (and the span models' spans) in place."""
        taggable = [s for s in sentences if s.words]
        if not taggable:
            return
        forms = [[w.form for w in s.words] for s in taggable]
        for model in self.models:
            conditions = [model.condition] * len(forms) if model.spans else None
            results = model.tagger.tag(forms, batch_size=self.spec.batch_size, conditions=conditions)
            for sentence, result in zip(taggable, results):
                for word, tag in zip(sentence.words, result.tags):
                    word.tags[model.name] = tag
                if model.spans:
                    sentence.spans += [SentenceSpan(model.name, s.label, s.start, s.end, s.score)
                                       for s in result.spans or []]

    def annotate(self, shard: Shard) -> ShardResult:
        text = shard.text if shard.text is not None else inputs.read_range(shard)
        sentences, documents = self.shard_sentences(shard, text)
        self.tag(sentences)
        output = "".join(write_sentence(s, self.spec.output_format, self.upos_model)
                         for s in sentences if s.words or self.spec.output_format == "conllu")
        return ShardResult(shard.index, output, documents, sum(1 for s in sentences if s.words),
                           sum(len(s.words) for s in sentences), shard.byte_end - shard.byte_start, shard.source)
