"""Learns the ``ud-english`` tokenizer's lexicon from a CoNLL-U treebank whose sentences carry ``# text``.

    python -m training.tagger.tokenizer_lexicon --train ../shared/data/ud-english-ewt/en_ewt-ud-train.conllu \
        --out training/common/ud_english_lexicon.json

Three lists, each read off the gold tokens of the training text (never the dev or test text):
- abbreviations: words of letters that end in a period and keep it (``Dr.``, ``etc.``, ``Sept.``);
- joined prefixes: the part before a hyphen that the treebank keeps joined to the next word more often than it
  splits it, seen joined at least ``--min-count`` times (``e-mail``, ``non-profit``);
- exceptions: whitespace-delimited chunks that the treebank cuts otherwise than the rules do, consistently
  (the same cut in at least ``--min-share`` of at least ``--min-count`` occurrences): ``cannot``, ``alot``, ``im``.
The file records where it was learnt from (path, sha256, counts) beside the lists.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable, Sequence

from training.common import artifacts
from training.common.tokenizer import LEXICON_FILE, UDEnglishTokenizer
from training.tagger.data import TaggedSentence, read_conllu

logger = logging.getLogger(__name__)


def gold_chunks(sentences: Iterable[TaggedSentence]) -> Iterable[tuple[str, tuple[int, ...]]]:
    """(chunk, the lengths of the gold words inside it) for every whitespace-delimited chunk of each ``# text``."""
    for sentence in sentences:
        if sentence.text is None or sentence.word_spans is None:
            continue
        for match in re.finditer(r"\S+", sentence.text):
            yield match.group(0), tuple(end - start for start, end in sentence.word_spans
                                        if start >= match.start() and end <= match.end())


def learn_lexicon(sentences: Sequence[TaggedSentence], min_count: int = 2, min_share: float = 0.75) -> dict:
    words = Counter(word for sentence in sentences for word in sentence.words)
    abbreviations = sorted({word[:-1] for word in words if re.fullmatch(r"[A-Za-z]+\.", word)})

    joined, split = Counter(), Counter()
    for chunk, lengths in gold_chunks(sentences):
        boundaries = {sum(lengths[:i]) for i in range(len(lengths) + 1)}
        for match in re.finditer(r"(?<![\w-])([A-Za-z]+)-(?=[A-Za-z])", chunk):
            hyphen = match.end() - 1
            # split when a gold word ends right before the hyphen and another starts right after it
            if hyphen in boundaries and hyphen + 1 in boundaries:
                split[match.group(1).lower()] += 1
            else:
                joined[match.group(1).lower()] += 1
    joined_prefixes = sorted(p for p, n in joined.items() if n > split[p] and n >= min_count)

    rules = UDEnglishTokenizer({"abbreviations": abbreviations, "joined_prefixes": joined_prefixes, "exceptions": {}})
    cuts: dict[str, Counter] = defaultdict(Counter)
    for chunk, lengths in gold_chunks(sentences):
        cuts[chunk.lower()][lengths] += 1
    exceptions = {}
    for chunk, counts in sorted(cuts.items()):
        lengths, n = counts.most_common(1)[0]
        if n >= min_count and n / sum(counts.values()) >= min_share and tuple(rules.split(chunk)) != lengths:
            exceptions[chunk] = list(lengths)
    return {"abbreviations": abbreviations, "joined_prefixes": joined_prefixes, "exceptions": exceptions}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.tagger.tokenizer_lexicon", description=__doc__.split("\n")[0])
    parser.add_argument("--train", required=True, type=Path, help="CoNLL-U file with # text (training split only)")
    parser.add_argument("--out", type=Path, default=LEXICON_FILE, help=f"default: {LEXICON_FILE}")
    parser.add_argument("--min-count", type=int, default=2)
    parser.add_argument("--min-share", type=float, default=0.75)
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sentences = read_conllu(args.train)
    lexicon = learn_lexicon(sentences, args.min_count, args.min_share)
    record = {"learnt_from": {"path": str(args.train), "sha256": artifacts.sha256_file(args.train),
                              "sentences": len(sentences), "licence": "the lists are read off UD English EWT "
                                                                      "(CC BY-SA 4.0) train"},
              "command": "python -m training.tagger.tokenizer_lexicon " + " ".join(sys.argv[1:] if argv is None else argv),
              **lexicon}
    args.out.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    logger.info("%d abbreviations, %d joined prefixes, %d exceptions -> %s", len(lexicon["abbreviations"]),
                len(lexicon["joined_prefixes"]), len(lexicon["exceptions"]), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
