"""``seqtag tag``: annotate corpora with exported taggers, on one machine or on a Ray cluster.

- ``inputs``: files, globs, directories or stdin (``.gz`` too) in text, CoNLL-U or JSONL, checked line by line and
  cut into shards (a few tens of KB each, at paragraph, sentence or line boundaries);
- ``annotator``: one shard -> its output text (tokenize, split sentences, tag with every model, write);
- ``writers``: CoNLL-U as UD writes it (multiword tokens, ``SpaceAfter=No``) and JSONL with character offsets;
- ``runner``: shards through one process or a pool of ``--processes``, written in input order, with progress;
- ``ray_runner``: the same shards through a Ray Data actor pool, written as shards with a manifest.

A shard's output depends on the shard alone, so every path writes the same bytes. Uses the exported models only
(``SavedTagger``), never a trainer.
"""
