"""The spaCy side of ``benchmarks/corpus_tagging.py``, run by spaCy's own interpreter (its venv; spaCy is not a
project dependency): a text file's paragraphs (blank-line separated, read as a stream) through ``nlp.pipe``, each
token's text and tag written one a line, a blank line after each paragraph.

    ../spacy-venv/bin/python benchmarks/spacy_corpus.py --model ../shared/peers/spacy-ewt-tagger --n-process 2 IN OUT
"""

import argparse
import sys


def paragraphs(path):
    lines = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                lines.append(line)
            elif lines:
                yield "".join(lines).strip()
                lines = []
    if lines:
        yield "".join(lines).strip()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--n-process", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("input")
    parser.add_argument("output")
    args = parser.parse_args()
    import spacy

    nlp = spacy.load(args.model)
    with open(args.output, "w", encoding="utf-8") as out:
        for doc in nlp.pipe(paragraphs(args.input), batch_size=args.batch_size, n_process=args.n_process):
            out.write("".join(f"{token.text}\t{token.tag_}\n" for token in doc if not token.is_space) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
