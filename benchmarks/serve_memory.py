"""Where a serving worker's memory goes, and each worker's RSS after a mixed load, by model.

    apt-get install wrk
    .venv/bin/python -m benchmarks.serve_memory [--models models] [--seconds 20] [--variants "defaults;SEQTAG_KEEP_VERSIONS=1"]

1. **Breakdown**, in a fresh process: RSS (``VmRSS``) after each step of what a worker does at start, one step at a
   time: Python with the service's modules; TensorFlow; ONNX Runtime; then every version the registry loads, each
   loaded as the registry loads it (``ModelRegistry`` over a models directory holding that version alone, so its
   warm-up and fast-path check run too). A step's growth is what it costs a worker.
2. **After a mixed load**: for each variant, gunicorn as ``make serve`` starts it, with every model under
   ``--models``; wrk then drives each model in turn for ``--seconds`` at 16 connections (tag requests of EWT dev
   sentences for taggers, slot spans for span models with an SGD service, streamed SwDA or SGD turns for dialog
   models: ``benchmarks/wrk/``), and the worker's RSS is read after each model's load and at the end, with the
   requests served so far. The worker, not the master: gunicorn's master loads no model.
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

from benchmarks.http_matrix import parse_variants, start_gunicorn, stop
from benchmarks.session_load import close_sessions, open_sessions, read_conversations, turn_file
from benchmarks.wrk_load import require_wrk, run_wrk

logger = logging.getLogger("benchmarks.serve_memory")

REPO = Path(__file__).resolve().parents[1]
EWT_DEV = Path("../shared/data/ud-english-ewt/en_ewt-ud-dev.conllu")
SWDA_VAL = Path("../shared/data/swda/val")
SGD_DEV = Path("../shared/data/sgd/sgd-dev.jsonl")

# Run in a fresh interpreter: prints one JSON line per step, {"step": ..., "rss_mib": ...}
BREAKDOWN = r"""
import json, os, sys, tempfile
from pathlib import Path

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

def say(step):
    print(json.dumps({"step": step, "rss_mib": rss()}), flush=True)

say("python")
import service, service.registry, service.app  # noqa: E401
say("+ the service's modules")
import tensorflow
say("+ TensorFlow")
import onnxruntime
say("+ ONNX Runtime")
from service.registry import ModelRegistry
from service.settings import ServiceSettings
from training.common import artifacts

models = Path(sys.argv[1])
registries = []
for name in sorted(p.name for p in models.iterdir() if p.is_dir()):
    for version in sorted(artifacts.list_versions(models / name), reverse=True):
        alone = Path(tempfile.mkdtemp()) / name
        alone.mkdir()
        (alone / str(version)).symlink_to((models / name / str(version)).resolve())
        registry = ModelRegistry(ServiceSettings.load({"models_dir": str(alone.parent), "poll_interval_seconds": 0,
                                                       "request_log": False}))
        registry.refresh(initial=True)
        registries.append(registry)
        say(f"+ {name}/{version}")
"""


def breakdown(models: Path) -> list[tuple[str, float]]:
    result = subprocess.run([sys.executable, "-c", BREAKDOWN, str(models)], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if result.returncode != 0:
        raise SystemExit(f"the breakdown failed:\n{result.stderr[-3000:]}")
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return [(row["step"], row["rss_mib"]) for row in rows]


def worker_rss_mib(master_pid: int) -> float:
    """The first worker's VmRSS (the master's child), in MiB."""
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    for line in Path(f"/proc/{children[0]}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def tag_bodies(folder: Path, condition: dict | None = None) -> Path:
    from training.tagger.data import read_conllu

    path = folder / ("spans.jsonl" if condition else "tag.jsonl")
    with path.open("w", encoding="utf-8") as out:
        for sentence in read_conllu(EWT_DEV):
            out.write(json.dumps({"sentences": [list(sentence.words)], **(condition or {})}) + "\n")
    return path


def model_kinds(models: Path) -> dict[str, dict]:
    from training.common import artifacts

    kinds = {}
    for directory in sorted(p for p in models.iterdir() if p.is_dir()):
        versions = artifacts.list_versions(directory)
        if versions:
            kinds[directory.name] = artifacts.read_metadata(directory / str(max(versions)))
    return kinds


def drive(port: int, name: str, metadata: dict, seconds: float, folder: Path) -> int:
    """wrk on one model for ``seconds`` at 16 connections; returns the requests served."""
    base = f"http://127.0.0.1:{port}"
    if metadata.get("kind") == "dialog":
        sgd = metadata.get("task") == "dialog-action"
        conversations = read_conversations(str(SGD_DEV if sgd else SWDA_VAL), "sgd" if sgd else "swda", False)
        ids = open_sessions(port, name, 16)
        path = turn_file(ids, conversations, 0)
        try:
            return run_wrk(base, "dialog_turns.lua", 16, seconds, [path]).requests
        finally:
            os.unlink(path)
            close_sessions(port, ids)
    condition = None
    if metadata.get("task") == "spans":
        service = (metadata.get("conditions") or [None])[0] or "Restaurants_1"
        condition = {"service": service}
    return run_wrk(f"{base}/v1/models/{name}:tag", "post_bodies.lua", 16, seconds, [str(tag_bodies(folder, condition))]).requests


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--seconds", type=float, default=20.0, help="wrk's run on each model")
    parser.add_argument("--variants", default="defaults", help='e.g. "defaults;SEQTAG_KEEP_VERSIONS=1"')
    parser.add_argument("--skip-breakdown", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if not args.skip_breakdown:
        logger.info("one worker's start, step by step (a fresh process; RSS after each step, and its growth):")
        previous = 0.0
        for step, rss in breakdown(args.models):
            logger.info("  %-40s %8.0f MiB %+8.0f", step, rss, rss - previous)
            previous = rss

    require_wrk()
    kinds = model_kinds(args.models)
    with tempfile.TemporaryDirectory(prefix="seqtag-memory-") as scratch:
        for name, settings in parse_variants(args.variants):
            process, port = start_gunicorn({"SEQTAG_MODELS_DIR": str(args.models), "SEQTAG_REQUEST_LOG": "false",
                                            **settings})
            try:
                logger.info("%s: worker RSS at start %.0f MiB", name, worker_rss_mib(process.pid))
                served = 0
                for model, metadata in kinds.items():
                    requests = drive(port, model, metadata, args.seconds, Path(scratch))
                    served += requests
                    logger.info("%s: after %6d requests to %-14s worker RSS %6.0f MiB (%d requests in all)", name,
                                requests, model, worker_rss_mib(process.pid), served)
            finally:
                stop(process)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
