"""Raw-text tokenization against gold words: word and sentence F1 on single sentences and on paragraphs, and speed.

    .venv/bin/python -m benchmarks.tokenization --spacy-python ../spacy-venv/bin/python

The texts are EWT dev's ``# text`` lines, alone (single sentences) and joined by a space within each paragraph
(``# newpar``), as a user's text arrives; a word counts when its character span is a gold word's
(``training.tagger.evaluate.evaluate_raw_text``). Every tokenizer of ``training.common.tokenizer`` is measured,
and, with ``--spacy-python`` (an interpreter with spaCy 3.8, which is not a project dependency; see
``../shared/peers/README.md``), spaCy's rule-based English tokenizer with its rule-based sentencizer
(``spacy.blank("en")`` + ``sentencizer``) in the same run. Speed: characters per second over the paragraphs,
the median of ``--repeat`` passes (spaCy's timed inside its own process).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

from training.common.tokenizer import TOKENIZERS, Token, get_tokenizer
from training.tagger.data import read_conllu
from training.tagger.evaluate import evaluate_raw_text, raw_texts

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "ud-english-ewt" / "en_ewt-ud-dev.conllu"

SPACY_SCRIPT = """
import json, sys, time, statistics, spacy
nlp = spacy.blank("en")
nlp.add_pipe("sentencizer")
request = json.load(sys.stdin)
texts, repeat = request["texts"], request["repeat"]
seconds = []
for _ in range(repeat):
    start = time.perf_counter()
    docs = [nlp(text) for text in texts]
    seconds.append(time.perf_counter() - start)
json.dump({"version": spacy.__version__, "seconds": statistics.median(seconds),
           "texts": [[[[t.idx, t.idx + len(t.text)] for t in sent if not t.is_space] for sent in doc.sents]
                     for doc in docs]}, sys.stdout)
"""


class Precomputed:
    """A tokenizer whose sentences were computed elsewhere (spaCy, in its own interpreter), text by text."""

    def __init__(self, name: str, texts: list[str], spans: list[list[list[list[int]]]]):
        self.name = name
        self._sentences = {text: [[Token(text[a:b], a, b) for a, b in sentence] for sentence in sentences if sentence]
                           for text, sentences in zip(texts, spans)}

    def sentences(self, text: str) -> list[list[Token]]:
        return self._sentences[text]


def spacy_tokenizer(python: str, texts: list[str], repeat: int) -> tuple[Precomputed, float, str]:
    completed = subprocess.run([python, "-c", SPACY_SCRIPT], input=json.dumps({"texts": texts, "repeat": repeat}),
                               capture_output=True, text=True, check=True)
    answer = json.loads(completed.stdout)
    return Precomputed(f"spacy-{answer['version']}", texts, answer["texts"]), answer["seconds"], answer["version"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEV, help="CoNLL-U with # text and # newpar (default: EWT dev)")
    parser.add_argument("--spacy-python", help="an interpreter with spaCy 3.8, to measure its tokenizer beside ours")
    parser.add_argument("--repeat", type=int, default=5, help="timed passes over the paragraphs (median)")
    args = parser.parse_args()

    sentences = read_conllu(args.data)
    units = {"single sentences": raw_texts(sentences, paragraphs=False), "paragraphs": raw_texts(sentences)}
    paragraph_texts = [t.text for t in units["paragraphs"]]
    characters = sum(len(text) for text in paragraph_texts)
    rows = []
    for name in TOKENIZERS:
        tokenizer = get_tokenizer(name)
        seconds = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            for text in paragraph_texts:
                tokenizer.sentences(text)
            seconds.append(time.perf_counter() - start)
        rows.append((name, tokenizer, statistics.median(seconds)))
    if args.spacy_python:
        every_text = sorted({t.text for texts in units.values() for t in texts})
        tokenizer, _, _ = spacy_tokenizer(args.spacy_python, every_text, 1)
        _, seconds, _ = spacy_tokenizer(args.spacy_python, paragraph_texts, args.repeat)
        rows.append((tokenizer.name, tokenizer, seconds))

    print(f"{args.data}: {len(units['single sentences'])} sentences, {len(units['paragraphs'])} paragraphs, "
          f"{characters:,} characters")
    print("| tokenizer | words F1, single sentences | words F1, paragraphs | sentences F1, paragraphs "
          "| characters/s (paragraphs) |")
    print("|---|---|---|---|---|")
    for name, tokenizer, seconds in rows:
        single = evaluate_raw_text(units["single sentences"], tokenizer)
        paragraph = evaluate_raw_text(units["paragraphs"], tokenizer)
        print(f"| {name} | {single['words']['f1']:.4f} | {paragraph['words']['f1']:.4f} | "
              f"{paragraph['sentences']['f1']:.4f} | {characters / seconds:,.0f} |")


if __name__ == "__main__":
    main()
