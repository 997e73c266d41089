"""``seqtag tag --ray``: the same shards as on one machine, tagged by a Ray Data actor pool, written as parts with a
manifest.

The driver checks every input and plans its shards (``inputs.plan_shards``, the same plan as the local run), and
groups consecutive shards into parts of about ``PART_CHARS`` characters. The parts become a Ray Dataset (one row
each, holding where its shards are, not their text); ``map_batches`` hands them to a pool of actors, each of which
loads the models once and reads its shards' bytes itself, so inputs must be readable at the same path from every
node (a shared filesystem, or the same files on each). Results come back in input order (``preserve_order``) and
the driver writes ``part-00000.conllu``, ... and ``manifest.json``: the parts in order with their sources, counts,
sha256 and the node that tagged each. The manifest says ``"complete": false`` while the job runs (rewritten as parts
arrive, at least every ``MANIFEST_SECONDS``, so one can watch a long job) and ``true`` once every part is written.
Concatenated in manifest order, the parts are byte for byte what the local run writes, since a shard's output
depends on the shard alone.

A node that dies mid-job loses its actors and whatever it was computing; Ray Data restarts the actors elsewhere and
runs their parts again (``max_restarts``/``max_task_retries``, which it sets for actor pools), and the driver
writes each part once, when it arrives: no part is lost or written twice. A run that stops before the end leaves
a manifest that says ``"complete": false`` (or none, if it stopped before its first part), so a part directory is
whole only when its manifest says ``true``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

from training.annotate.annotator import AnnotatorSpec
from training.annotate.inputs import Shard, Source
from training.annotate.runner import Totals, planned_shards
from training.common.errors import ConfigError
from training.common.ray_cluster import connect

logger = logging.getLogger(__name__)

PART_CHARS = 1 << 20  # characters of input per part (a Ray task): some 200k words
MANIFEST_FILE = "manifest.json"
# The in-progress manifest lists every part so far, so rewriting it after each part costs O(parts^2) on a long job:
# it is rewritten once MANIFEST_COST times its last write's duration has passed (small manifests after every part),
# and at least every MANIFEST_SECONDS
MANIFEST_COST = 20
MANIFEST_SECONDS = 1.0


class ShardGroupAnnotator:
    """A Ray Data actor: one ``Annotator`` (one model load) for every part it is given."""

    def __init__(self, spec: AnnotatorSpec, threads: int = 1):
        os.environ["SEQTAG_ONNX_THREADS"] = str(threads)
        from training.annotate.annotator import Annotator

        self.annotator = Annotator(spec)
        import ray

        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict) -> dict:
        out = {"part": [], "output": [], "documents": [], "sentences": [], "words": [], "sources": [], "node": []}
        for part, shards in zip(batch["part"], batch["shards"]):
            results = [self.annotator.annotate(Shard(**fields)) for fields in json.loads(shards)]
            out["part"].append(int(part))
            out["output"].append("".join(r.output for r in results))
            out["documents"].append(sum(r.documents for r in results))
            out["sentences"].append(sum(r.sentences for r in results))
            out["words"].append(sum(r.words for r in results))
            out["sources"].append(json.dumps(sorted({r.source for r in results})))
            out["node"].append(self.node)
        return out


def group_shards(shards: list[Shard], part_chars: int = PART_CHARS) -> list[list[Shard]]:
    parts: list[list[Shard]] = []
    size = part_chars
    for shard in shards:
        if size >= part_chars:
            parts.append([])
            size = 0
        parts[-1].append(shard)
        size += shard.byte_end - shard.byte_start
    return parts


def run_on_ray(spec: AnnotatorSpec, sources: list[Source], directory: Path, address: str, actors: int | None = None,
               skip_bad: bool = False, quiet: bool = False, part_chars: int = PART_CHARS) -> Totals:
    try:
        ray = connect(address)
        import ray.data  # noqa: F401
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] in ("ray", "pyarrow", "pandas"):
            raise ConfigError("--ray needs Ray Data: pip install 'seqtag[ray]'") from None
        raise
    from tqdm import tqdm

    totals = Totals()
    started = time.perf_counter()
    shards = [shard for _, shard in planned_shards(sources, spec.input_format, skip_bad, totals, with_text=False)]
    parts = group_shards(shards, part_chars)
    for stale in directory.glob("part-*"):
        stale.unlink()
    (directory / MANIFEST_FILE).unlink(missing_ok=True)
    if not parts:
        _write_manifest(directory, spec, [], totals)
        return totals
    cpus = int(ray.cluster_resources().get("CPU", 1))
    pool = max(1, min(actors or cpus, len(parts)))
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    rows = [{"part": i, "shards": json.dumps([asdict(s) for s in group])} for i, group in enumerate(parts)]
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        ShardGroupAnnotator, fn_constructor_kwargs={"spec": spec, "threads": 1}, batch_size=1, concurrency=pool,
        num_cpus=1, scheduling_strategy="SPREAD")
    suffix = spec.output_format
    written: list[dict] = []
    manifest_written, manifest_cost = 0.0, 0.0
    bar = tqdm(total=len(parts), unit="part", disable=quiet, file=sys.stderr, desc="tagging on Ray", mininterval=0.5)
    try:
        for row in dataset.iter_rows():
            part = int(row["part"])
            if part != len(written):
                raise RuntimeError(f"part {part} arrived where part {len(written)} was due")
            name = f"part-{part:05d}.{suffix}"
            data = row["output"].encode("utf-8")
            (directory / name).write_bytes(data)
            written.append({"file": name, "sources": json.loads(row["sources"]), "documents": int(row["documents"]),
                            "sentences": int(row["sentences"]), "words": int(row["words"]), "bytes": len(data),
                            "sha256": hashlib.sha256(data).hexdigest(), "node": row["node"]})
            totals.documents += int(row["documents"])
            totals.sentences += int(row["sentences"])
            totals.words += int(row["words"])
            if time.monotonic() - manifest_written >= min(MANIFEST_SECONDS, MANIFEST_COST * manifest_cost):
                manifest_written = time.monotonic()
                _write_manifest(directory, spec, written, totals, actors=pool, complete=False)
                manifest_cost = time.monotonic() - manifest_written
            bar.update(1)
            bar.set_postfix(words_per_s=int(totals.words / max(time.perf_counter() - started, 1e-9)), refresh=False)
    finally:
        bar.close()
    totals.seconds = time.perf_counter() - started
    _write_manifest(directory, spec, written, totals, actors=pool)
    return totals


def _write_manifest(directory: Path, spec: AnnotatorSpec, parts: list[dict], totals: Totals, actors: int = 0,
                    complete: bool = True) -> None:
    manifest = {"complete": complete, "output_format": spec.output_format, "input_format": spec.input_format,
                "models": list(spec.models), "service": spec.service, "precision": spec.precision, "actors": actors,
                "documents": totals.documents, "sentences": totals.sentences, "words": totals.words,
                "skipped": totals.skipped, "parts": parts}
    staging = directory / (MANIFEST_FILE + ".tmp")
    staging.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    staging.replace(directory / MANIFEST_FILE)
