"""``seqtag tag``: the command line of corpus annotation (``training.annotate``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

from training.annotate.inputs import INPUT_FORMATS, SUFFIXES
from training.annotate.writers import OUTPUT_FORMATS
from training.common.errors import ConfigError

logger = logging.getLogger("seqtag.tag")


def add_tag_parser(commands) -> argparse.ArgumentParser:
    tag = commands.add_parser(
        "tag", help="annotate a corpus: text, CoNLL-U or JSONL files in, CoNLL-U or JSONL out",
        description="Tokenize, split sentences and tag every input with the given models, streaming, in input order. "
                    "Inputs: files, globs, directories or '-' for stdin (the default), .gz too.")
    tag.add_argument("inputs", nargs="*", metavar="INPUT", help="files, globs, directories, or - for stdin")
    tag.add_argument("--model", dest="models", action="append", required=True, type=Path, metavar="DIR",
                     help="models/<name> (its highest version) or models/<name>/<version>; several for several "
                          "annotations (a POS model fills UPOS, others go to MISC as name=TAG)")
    tag.add_argument("--service", metavar="NAME", help="span models: the service every sentence is about (e.g. Restaurants_1)")
    tag.add_argument("--schemas", nargs="+", type=Path, default=[], metavar="FILE",
                     help="schema-guided span models: schema files of services the model was not shipped with")
    tag.add_argument("--input-format", choices=INPUT_FORMATS,
                     help="text (paragraphs separated by blank lines), conllu (its tokens are kept) or jsonl (one "
                          '{"text": ..., "id": ...} a line); default: from the inputs\' names, else text')
    tag.add_argument("--output-format", choices=OUTPUT_FORMATS,
                     help="conllu (default) or jsonl (one sentence a line, with character offsets)")
    tag.add_argument("-o", "--output", metavar="FILE|DIR",
                     help="a file, or a directory (existing, or ending in /): one output per input; with --ray, the "
                          "directory of the shards and their manifest (default: stdout)")
    tag.add_argument("--processes", type=int, default=1, metavar="N",
                     help="worker processes, each with its own copy of the models (0: one per core; default 1)")
    tag.add_argument("--skip-bad", action="store_true",
                     help="leave out an input that is not valid UTF-8 text or not well-formed (with a warning) "
                          "instead of stopping")
    tag.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    tag.add_argument("--batch-size", type=int, default=256, help="sentences per model call")
    tag.add_argument("--precision", choices=("int8", "float32"), default="int8",
                     help="the taggers' LSTMs: int8 (default: twice the words/s, the same dev accuracy; checked against "
                          "float32 when a model loads) or float32 (the HTTP service's exact answers)")
    tag.add_argument("--ray", metavar="ADDRESS",
                     help="run on a Ray cluster: 'auto' (the one this machine belongs to) or ray://HOST:PORT; needs "
                          "'pip install seqtag[ray]', -o DIR, and inputs every node can read")
    tag.add_argument("--part-size", type=int, default=1 << 20, metavar="CHARS",
                     help="with --ray: characters of input per part, the unit of work and of output (default 1 Mi)")
    tag.add_argument("--actors", type=int, metavar="N",
                     help="with --ray: actors in the pool, one model copy each (default: the cluster's CPUs)")
    return tag


def _input_format(args) -> str:
    if args.input_format:
        return args.input_format
    names = [a[:-3] if a.endswith(".gz") else a for a in args.inputs]
    for name, suffixes in SUFFIXES.items():
        if names and all(n.endswith(suffixes) for n in names):
            return name
    return "text"


def command_tag(args: argparse.Namespace) -> int:
    from training.annotate import inputs
    from training.annotate.annotator import AnnotatorSpec

    if args.processes < 0:
        raise ConfigError("--processes must be 0 (one per core) or more")
    processes = args.processes or len(os.sched_getaffinity(0))
    output = Path(args.output) if args.output else None
    output_format = args.output_format or ("jsonl" if output and output.suffix == ".jsonl" else "conllu")
    from training.common import artifacts

    # Versions resolved here, as absolute paths: worker processes and Ray actors load exactly these
    models = tuple(str(artifacts.resolve_model_dir(m).resolve()) for m in args.models)
    spec = AnnotatorSpec(models, _input_format(args), output_format, args.service,
                         tuple(str(s.resolve()) for s in args.schemas), precision=args.precision, batch_size=args.batch_size)
    directory = None
    if output is not None and (output.is_dir() or args.output.endswith(os.sep) or args.ray):
        directory = output
        directory.mkdir(parents=True, exist_ok=True)
    if args.ray and directory is None:
        raise ConfigError("--ray writes shards and a manifest: give -o DIR")
    if args.ray and (not args.inputs or "-" in args.inputs):
        raise ConfigError("--ray reads files every node can read, not stdin")
    with tempfile.TemporaryDirectory(prefix="seqtag-tag-") as spool:
        sources = inputs.expand_inputs(args.inputs, spec.input_format, Path(spool))
        if args.ray:
            from training.annotate.ray_runner import run_on_ray

            totals = run_on_ray(spec, sources, directory, args.ray, actors=args.actors, skip_bad=args.skip_bad,
                                quiet=args.quiet, part_chars=args.part_size)
        else:
            from training.annotate.runner import run_local

            if directory is not None:
                twice = sorted(name for name, count in Counter(s.relative for s in sources).items() if count > 1)
                if twice:
                    raise ConfigError(f"-o {args.output}: two inputs would write {twice[0]}.{output_format}; give their "
                                      "directory instead, or -o FILE")
            stream = None
            if directory is None:
                stream = open(output, "w", encoding="utf-8") if output else sys.stdout
            try:
                totals = run_local(spec, sources, stream, directory, processes, args.skip_bad, args.quiet)
            finally:
                if stream is not None and stream is not sys.stdout:
                    stream.close()
    logger.info("tagged %d documents, %d sentences, %d words from %d inputs in %.1f s (%.0f words/s)%s",
                totals.documents, totals.sentences, totals.words, totals.sources, totals.seconds,
                totals.words / max(totals.seconds, 1e-9),
                f"; skipped {len(totals.skipped)} bad inputs" if totals.skipped else "")
    return 0
