"""In-process speed of every shipped model version on the serving fast path: the figures the model cards show.

    .venv/bin/python -m benchmarks.model_speed                                      # print the figures
    .venv/bin/python -m benchmarks.model_speed --write docs/models/speed.json       # and record them
    .venv/bin/seqtag cards                                                          # then regenerate the cards

Each version under ``--models`` is loaded as the service loads it (``ServiceSettings``' defaults: ``runtime``
"onnx", its TensorFlow thread pools) through the readers the service uses, ``SavedTagger`` and
``SavedDialogModel``, one version at a time, and timed on its own dev data (the ``data.dev`` path its metadata
records when that file is here, else the corpus's dev split under ``../shared/data``):

- taggers (POS, spans): tokens/s of ``SavedTagger.tag`` over ``--sentences`` dev sentences in length-sorted
  batches of the service's ``max_batch_size`` (64), the median of the rounds; and p50 / p99 of one sentence at a
  time (a lone request) over every sentence of every round (span models get each turn's service as its condition);
- dialog models: p50 / p99 of one session's ``step`` (a turn, tokenization outside), streaming dev conversations
  from the zero state until ``--turns`` turns, every round's turns pooled (``benchmarks.dialog_step``'s loop).

The helpers are those of ``benchmarks.inprocess_tagging`` and ``benchmarks.dialog_step``; percentiles are
nearest-rank (``inprocess_tagging.percentile``). Rounds stop early once a version has been timed for
``--max-seconds`` (after the first), so each model takes well under a minute with loading. ``--write FILE``
records the date, the machine (cores, CPU model), the exact command and each version's figures as JSON for
``seqtag cards`` (``training/model_cards.py``), which shows them; the cards never measure anything themselves.
The machine's load is recorded beside: on a shared machine figures drift by 10-20 % from run to run.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import logging
import os
import platform
import random
import shlex
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.dialog_step import stream_times  # noqa: E402
from benchmarks.inprocess_tagging import batch_rate, percentile, single_latencies  # noqa: E402
from service.settings import ServiceSettings  # noqa: E402
from training.common import artifacts  # noqa: E402
from training.common.saved_model import set_tensorflow_threads  # noqa: E402

logger = logging.getLogger("benchmarks.model_speed")
REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
# Each format's dev split, for a version whose recorded dev file is not on this machine.
DEFAULT_DEV = {"conllu": SHARED / "ud-english-ewt" / "en_ewt-ud-dev.conllu", "sgd": SHARED / "sgd" / "sgd-dev.jsonl",
               "swda": SHARED / "swda" / "val"}


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": len(os.sched_getaffinity(0)), "cpu": cpu, "platform": platform.platform(),
            "python": platform.python_version()}


def dev_data(metadata: dict) -> Path:
    recorded = ((metadata.get("data") or {}).get("dev") or {}).get("path")
    if recorded and Path(recorded).exists():
        return Path(recorded)
    fallback = DEFAULT_DEV.get(metadata.get("data_format", ""))
    if fallback is None or not fallback.exists():
        raise SystemExit(f"no dev data for {metadata.get('name')}: {recorded} is not here, nor a default")
    return fallback


def measure_tagger(directory: Path, metadata: dict, args, settings: ServiceSettings) -> dict:
    from training.tagger.saved_tagger import SavedTagger

    data = dev_data(metadata)
    if metadata.get("task") == "spans":
        from training.tagger.spans import read_sgd_spans

        read, _ = read_sgd_spans(data, metadata.get("scheme", "bio"), metadata.get("tokenizer", "ud-english"))
    else:
        from training.tagger.data import read_conllu

        read = read_conllu(data, metadata.get("tag_column", "upos"))
    read = [s for s in read if s.words]
    random.Random(0).shuffle(read)
    chosen = read[:args.sentences]
    sentences = [list(s.words) for s in chosen]
    conditions = [s.condition or "" for s in chosen] if metadata.get("task") == "spans" else None
    tagger = SavedTagger(directory, metadata, runtime=settings.runtime)
    batch = settings.max_batch_size
    tagger.tag(sentences[:100], batch_size=batch, conditions=conditions[:100] if conditions else None)  # warm-up
    single_latencies(tagger, sentences[:20], conditions[:20] if conditions else None)
    rates, latencies, rounds = [], [], 0
    start = time.perf_counter()
    while rounds < args.rounds and (rounds == 0 or time.perf_counter() - start < args.max_seconds):
        rates.append(batch_rate(tagger, sentences, batch, conditions))
        latencies.extend(single_latencies(tagger, sentences, conditions))
        rounds += 1
    return {"kind": "tagger", "runtime": tagger.runtime, "data": os.path.relpath(data), "sentences": len(sentences),
            "tokens": sum(len(s) for s in sentences), "batch_size": batch, "rounds": rounds,
            "tokens_per_second": round(statistics.median(rates), 1),
            "sentence_ms": {"p50": round(1e3 * percentile(latencies, 0.5), 4),
                            "p99": round(1e3 * percentile(latencies, 0.99), 4), "count": len(latencies)}}


def measure_dialog(directory: Path, metadata: dict, args, settings: ServiceSettings) -> dict:
    from training.dialog.data import read_dialogs
    from training.dialog.evaluate import dialog_inputs
    from training.dialog.saved_dialog import SavedDialogModel

    data = dev_data(metadata)
    model = SavedDialogModel(directory, metadata, runtime=settings.runtime)
    conversations, turns = [], 0
    for dialog in read_dialogs(data, metadata.get("data_format", "jsonl")):
        if turns >= args.turns:
            break
        conversations.append(dialog_inputs(dialog, model.multi_label, model.tokenizer))
        turns += len(conversations[-1])
    stream_times(model, conversations[:1])  # warm-up: first calls build and cache
    times, rounds = [], 0
    start = time.perf_counter()
    while rounds < args.rounds and (rounds == 0 or time.perf_counter() - start < args.max_seconds):
        times.extend(stream_times(model, conversations))
        rounds += 1
    return {"kind": "dialog", "runtime": model.runtime, "data": os.path.relpath(data), "conversations": len(conversations),
            "rounds": rounds, "turn_ms": {"p50": round(1e3 * percentile(times, 0.5), 4),
                                          "p99": round(1e3 * percentile(times, 0.99), 4), "count": len(times)}}


def command_line(argv: list[str]) -> str:
    executable = Path(sys.executable)
    try:
        shown = str(executable.relative_to(Path.cwd()))
    except ValueError:
        shown = "python"
    return shlex.join([shown, "-m", "benchmarks.model_speed", *argv])


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("models"), help="the models directory (default: models)")
    parser.add_argument("--versions", default="", help="only these, comma-separated <name>/<version> (default: all)")
    parser.add_argument("--sentences", type=int, default=400, help="dev sentences per tagger (default: 400)")
    parser.add_argument("--turns", type=int, default=400,
                        help="dialog models: dev conversations streamed until this many turns (default: 400)")
    parser.add_argument("--rounds", type=int, default=10, help="passes over the sentences or conversations (default: 10)")
    parser.add_argument("--max-seconds", type=float, default=20.0,
                        help="no new round after a version has been timed this long (default: 20)")
    parser.add_argument("--write", type=Path, metavar="FILE",
                        help="record the figures as JSON for 'seqtag cards' (e.g. docs/models/speed.json)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("training").setLevel(logging.WARNING)
    settings = ServiceSettings()
    set_tensorflow_threads(settings.tf_inter_op_threads, settings.tf_intra_op_threads)

    wanted = {v.strip() for v in args.versions.split(",") if v.strip()}
    targets = []
    for root in sorted(p for p in args.models.iterdir() if p.is_dir()):
        for number in sorted(artifacts.list_versions(root), reverse=True):
            if not wanted or f"{root.name}/{number}" in wanted:
                targets.append((f"{root.name}/{number}", root / str(number)))
    if not targets:
        raise SystemExit(f"no model versions under {args.models}" + (f" among {args.versions}" if wanted else ""))
    host = machine()
    load = os.getloadavg()
    logger.info("%d versions; %d cores (%s); load average %.1f %.1f %.1f", len(targets), host["cores"], host["cpu"], *load)

    results = {}
    for key, directory in targets:
        metadata = artifacts.read_metadata(directory)
        began = time.perf_counter()
        measure = measure_dialog if metadata.get("kind") == "dialog" else measure_tagger
        results[key] = measure(directory, metadata, args, settings)
        gc.collect()
        figures = results[key]
        if "tokens_per_second" in figures:
            logger.info("%-18s %-6s %8.0f tokens/s (batches of %d, %d sentences); one sentence p50 %.3f ms, "
                        "p99 %.3f ms  [%.0f s]", key, figures["runtime"], figures["tokens_per_second"],
                        figures["batch_size"], figures["sentences"], figures["sentence_ms"]["p50"],
                        figures["sentence_ms"]["p99"], time.perf_counter() - began)
        else:
            logger.info("%-18s %-6s one session's turn p50 %.3f ms, p99 %.3f ms (%d turns, %d conversations x %d "
                        "rounds)  [%.0f s]", key, figures["runtime"], figures["turn_ms"]["p50"], figures["turn_ms"]["p99"],
                        figures["turn_ms"]["count"], figures["conversations"], figures["rounds"],
                        time.perf_counter() - began)

    print(f"{'version':<20} {'runtime':<8} {'tokens/s':>10} {'p50 ms':>8} {'p99 ms':>8}  unit")
    for key, figures in results.items():
        rate = f"{figures['tokens_per_second']:,.0f}" if "tokens_per_second" in figures else "-"
        ms = figures.get("sentence_ms") or figures["turn_ms"]
        unit = "sentence" if "sentence_ms" in figures else "turn (one session)"
        print(f"{key:<20} {figures['runtime']:<8} {rate:>10} {ms['p50']:>8.3f} {ms['p99']:>8.3f}  {unit}")
    if args.write:
        record = {"date": datetime.date.today().isoformat(), "machine": host, "command": command_line(argv),
                  "load_average_at_start": [round(x, 2) for x in load],
                  "settings": {"runtime": settings.runtime, "tf_inter_op_threads": settings.tf_inter_op_threads,
                               "tf_intra_op_threads": settings.tf_intra_op_threads},
                  "versions": results}
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        logger.info("wrote %s: now run seqtag cards", args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
