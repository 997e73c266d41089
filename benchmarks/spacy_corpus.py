"""The spaCy side of ``benchmarks/corpus_tagging.py``, run by spaCy's own interpreter (its venv; spaCy is not a
project dependency): a text file's paragraphs (blank-line separated, read as a stream) through ``nlp.pipe``, each
token's text and tag written one a line, a blank line after each paragraph.

    ../spacy-venv/bin/python benchmarks/spacy_corpus.py --model ../shared/peers/spacy-ewt-tagger --n-process 2 IN OUT

``--conllu`` writes CoNLL-U instead (sentences from spaCy's rule ``sentencizer``, added as a spaCy user would, since
the peer has no sentence splitter; ``SpaceAfter=No``; the tag in UPOS), for the CoNLL 2018 scorer
(``benchmarks/raw_text_scores.py --system``).
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
    parser.add_argument("--conllu", action="store_true", help="CoNLL-U with sentences, for the CoNLL 2018 scorer")
    parser.add_argument("input")
    parser.add_argument("output")
    args = parser.parse_args()
    import spacy

    nlp = spacy.load(args.model)
    if args.conllu:
        nlp.add_pipe("sentencizer", first=True)
    with open(args.output, "w", encoding="utf-8") as out:
        for number, doc in enumerate(nlp.pipe(paragraphs(args.input), batch_size=args.batch_size,
                                              n_process=args.n_process), 1):
            if args.conllu:
                out.write(conllu_paragraph(doc, number))
            else:
                out.write("".join(f"{token.text}\t{token.tag_}\n" for token in doc if not token.is_space) + "\n")
    return 0


def conllu_paragraph(doc, number: int) -> str:
    lines = ["# newpar"]
    for index, sentence in enumerate(doc.sents, 1):
        tokens = [token for token in sentence if not token.is_space]
        if not tokens:
            continue
        lines += [f"# sent_id = p{number}-s{index}", f"# text = {sentence.text.strip()}"]
        for i, token in enumerate(tokens, 1):
            misc = "_" if token.whitespace_ or token.i + 1 >= len(doc) or doc[token.i + 1].is_space else "SpaceAfter=No"
            lines.append(f"{i}\t{token.text}\t_\t{token.tag_}\t_\t_\t_\t_\t_\t{misc}")
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
