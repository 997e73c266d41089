"""``seqtag tag`` on a treebank's raw text, scored by the CoNLL 2018 shared task's own script, beside ``seqtag
evaluate --raw-text``'s figures for the same model and text.

    .venv/bin/python -m benchmarks.raw_text_scores --model models/pos \
        --data ../shared/data/ud-english-ewt/en_ewt-ud-dev.conllu [--precision int8|float32] [--json] [--keep DIR]

Another tagger, for comparison: ``--write-raw-text FILE`` writes step 1's text, and ``--system OUT.conllu`` scores
what it wrote for that text (spaCy: ``benchmarks/spacy_corpus.py --conllu``).

1. The gold file's raw text: each paragraph (``# newpar`` / ``# newdoc``) its sentences' ``# text`` joined by a
   space, paragraphs apart by a blank line (``training.tagger.evaluate.raw_texts``, what ``--raw-text`` reads).
2. ``seqtag tag`` writes CoNLL-U from it; ``udvalidate --level 1`` (UD's validator, PyPI ``udtools``) checks it.
3. The scorer (``udtools.udeval``, the CoNLL 2018 evaluation script) reads HEAD as an integer and wants a tree,
   so it reads a *scoring copy* whose HEAD and DEPREL are placeholders (word 1 the root, every other word attached
   to it); the output users get keeps ``_``. Tokens, Sentences, Words and UPOS F1 are the scorer's (LAS and the
   rest mean nothing here).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SCORED = ("Tokens", "Sentences", "Words", "UPOS")


def write_raw_text(gold: Path, target: Path, limit: int | None = None) -> int:
    """The gold file's paragraphs as plain text (a blank line between them); returns their number."""
    from training.tagger.data import read_conllu
    from training.tagger.evaluate import raw_texts

    sentences = read_conllu(gold)
    texts = raw_texts(sentences[:limit] if limit else sentences, paragraphs=True)
    target.write_text("\n\n".join(t.text for t in texts) + "\n", encoding="utf-8")
    return len(texts)


def scoring_copy(conllu: str) -> str:
    """Placeholder heads for the scorer alone: in each sentence word 1 is the root and the others depend on it."""
    out = []
    for line in conllu.split("\n"):
        columns = line.split("\t")
        if len(columns) == 10 and columns[0].isdigit():
            first = columns[0] == "1"
            columns[6], columns[7] = ("0", "root") if first else ("1", "dep")
            line = "\t".join(columns)
        out.append(line)
    return "\n".join(out)


def conll18_scores(gold: Path, system_conllu: str) -> dict[str, dict[str, float]]:
    """The CoNLL 2018 scorer's precision, recall and F1 of tokens, sentences, words and UPOS."""
    from udtools import udeval

    with tempfile.NamedTemporaryFile("w", suffix=".conllu", encoding="utf-8", delete=False) as handle:
        handle.write(scoring_copy(system_conllu))
    try:
        evaluation = udeval.evaluate(udeval.load_conllu_file(str(gold)), udeval.load_conllu_file(handle.name))
    finally:
        os.unlink(handle.name)
    return {name: {"precision": evaluation[name].precision, "recall": evaluation[name].recall,
                   "f1": evaluation[name].f1} for name in SCORED}


def validate_level1(path: Path) -> tuple[int, str]:
    """UD's validator at level 1 (the CoNLL-U backbone): its exit status and what it printed."""
    validator = Path(sys.executable).with_name("udvalidate")
    result = subprocess.run([str(validator), "--lang", "en", "--level", "1", str(path)], capture_output=True, text=True)
    return result.returncode, (result.stdout + result.stderr).strip()


def tag_file(model: Path, text_file: Path, processes: int = 1, precision: str = "int8") -> str:
    from training.annotate.annotator import AnnotatorSpec
    from training.annotate.inputs import Source
    from training.annotate.runner import run_local

    with tempfile.NamedTemporaryFile("w+", suffix=".conllu", encoding="utf-8") as out:
        run_local(AnnotatorSpec((str(model),), precision=precision), [Source(text_file, text_file.name, False)], out, None,
                  processes=processes, quiet=True)
        out.seek(0)
        return out.read()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/pos"))
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ud-english-ewt/en_ewt-ud-dev.conllu"))
    parser.add_argument("--precision", choices=("int8", "float32"), default="int8", help="as seqtag tag --precision")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", type=Path, help="keep the raw text, the output and the scoring copy here")
    parser.add_argument("--write-raw-text", type=Path, metavar="FILE", help="only write the raw text to FILE")
    parser.add_argument("--system", type=Path, metavar="CONLLU",
                        help="score this file (another tagger's output for the raw text) instead of tagging")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.write_raw_text:
        write_raw_text(args.data, args.write_raw_text)
        return 0
    if args.system:
        scores = conll18_scores(args.data, args.system.read_text(encoding="utf-8"))
        print(json.dumps(scores, indent=1) if args.json else "\n".join(
            f"  {name:<10} {scores[name]['f1'] * 100:6.2f}" for name in SCORED))
        return 0
    from training.tagger.cli import evaluate_raw_text

    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        text = folder / "raw.txt"
        write_raw_text(args.data, text)
        output = tag_file(args.model, text, precision=args.precision)
        (folder / "tagged.conllu").write_text(output, encoding="utf-8")
        (folder / "scoring-copy.conllu").write_text(scoring_copy(output), encoding="utf-8")
        status, report = validate_level1(folder / "tagged.conllu")
        scores = conll18_scores(args.data, output)
    from training.common.artifacts import resolve_model_dir

    ours = evaluate_raw_text(resolve_model_dir(args.model), args.data, precision=args.precision)["paragraphs"]
    result = {"model": str(args.model), "data": str(args.data), "precision": args.precision, "conll18": scores,
              "udvalidate_level1": {"status": status, "report": report.splitlines()[-1:] if report else []},
              "seqtag_evaluate_raw_text": {"words": ours["words"]["f1"], "sentences": ours["sentences"]["f1"],
                                           "upos": ours["upos"]["f1"]}}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{args.model} on the raw text of {args.data}: CoNLL 2018 scorer F1 (seqtag evaluate --raw-text)")
        for name, key in (("Tokens", None), ("Sentences", "sentences"), ("Words", "words"), ("UPOS", "upos")):
            ours_f1 = f"({result['seqtag_evaluate_raw_text'][key] * 100:.2f})" if key else ""
            print(f"  {name:<10} {scores[name]['f1'] * 100:6.2f} {ours_f1}")
        print(f"  udvalidate --level 1: {'pass' if status == 0 else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
