"""``seqtag tag`` against spaCy's ``nlp.pipe`` on raw text, side by side in one run, and the Ray path against
``--processes``.

    .venv/bin/python -m benchmarks.corpus_tagging --model models/pos --spacy-python ../spacy-venv/bin/python \
        [--tokens 1000000] [--rounds 3] [--ray]

The corpus is EWT dev's raw text (its paragraphs, as ``benchmarks.raw_text_scores`` writes them) repeated to about
``--tokens`` words, plus a 100k-word cut of it. Each round runs every side in turn, as whole commands from start to
exit (model loading, tokenization, tagging and writing the output all count):

- ``seqtag tag --model M -q --processes P corpus -o out.conllu`` for P in 1, 2 (sentences split, CoNLL-U written);
- spaCy 3.8 with the EWT-trained tagger in ``../shared/peers`` (rule tokenizer, tok2vec, tagger) in its own venv:
  ``nlp.pipe(paragraphs, batch_size=256, n_process=P)`` over the paragraphs read from the same file, each token's
  text and tag written one a line (``benchmarks/spacy_corpus.py``; its pipeline splits no sentences);
- with ``--ray``: a local Ray cluster of two nodes of one CPU each (``ray start``), ``seqtag tag --ray ADDRESS
  --actors 2`` against ``--processes 2`` (the cluster's start is not counted; the driver, its actors' start and the
  parts' writing are).

Figures are medians over rounds: tokens/s (each side's own tokens), the ratio to spaCy at the same process count,
the start-up cost (the same command on a one-line file), and the peak RSS of the whole process tree (sampled every
50 ms) at 100k and at ``--tokens``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.http_matrix import rss_mib

REPO = Path(__file__).resolve().parents[1]
EWT_DEV = REPO.parent / "shared" / "data" / "ud-english-ewt" / "en_ewt-ud-dev.conllu"
DEV_WORDS = 25_147


def make_corpus(folder: Path, words: int) -> Path:
    from benchmarks.raw_text_scores import write_raw_text

    once = folder / "dev.txt"
    if not once.exists():
        write_raw_text(EWT_DEV, once)
    text = once.read_text(encoding="utf-8")
    target = folder / f"corpus-{words}.txt"
    repeats = max(1, math.ceil(words / DEV_WORDS))
    with open(target, "w", encoding="utf-8") as out:
        for _ in range(repeats):
            out.write(text + "\n")
    return target


def run_measured(command: list[str], env: dict | None = None) -> tuple[float, int]:
    """Wall seconds and the peak RSS (bytes) of the command's whole process tree."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:  # the process and its children (a pool's workers, spaCy's n_process ones)
                peak = max(peak, int(rss_mib(process.pid) * 2**20))
            except OSError:  # one of them ended between the listing and the reading
                pass
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = process.communicate()
    done.set()
    sampler.join()
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {stderr.decode()[-2000:]}")
    return seconds, peak


def count_tokens(output: Path, conllu: bool) -> int:
    count = 0
    with open(output, encoding="utf-8") as handle:
        for line in handle:
            if conllu:
                head = line.split("\t", 1)[0]
                count += head.isdigit()
            else:
                count += line != "\n"
    return count


def ours(model: str, corpus: Path, out: Path, processes: int, extra: list[str] | None = None) -> list[str]:
    seqtag = str(Path(sys.executable).with_name("seqtag"))
    return [seqtag, "tag", "--model", model, "-q", "--processes", str(processes), *(extra or []), str(corpus), "-o", str(out)]


def spacy(python: str, corpus: Path, out: Path, processes: int) -> list[str]:
    return [python, str(REPO / "benchmarks" / "spacy_corpus.py"), "--model", str(REPO.parent / "shared" / "peers" /
            "spacy-ewt-tagger"), "--n-process", str(processes), str(corpus), str(out)]


def start_ray_cluster(folder: Path) -> tuple[str, dict]:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    ray = str(Path(sys.executable).with_name("ray"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="rb", dir="/tmp")
    subprocess.run([ray, "start", "--head", "--port", str(port), "--num-cpus", "1", "--include-dashboard", "false",
                    "--temp-dir", temp, "--disable-usage-stats"], env=env, check=True, capture_output=True)
    subprocess.run([ray, "start", "--address", f"127.0.0.1:{port}", "--num-cpus", "1"], env=env, check=True,
                   capture_output=True)
    return f"127.0.0.1:{port}", env


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="models/pos")
    parser.add_argument("--spacy-python", default=str(REPO.parent / "spacy-venv" / "bin" / "python"))
    parser.add_argument("--tokens", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ray", action="store_true", help="also the Ray path on a local 2-node cluster")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)
    results: dict = {"model": args.model, "tokens_target": args.tokens, "rounds": args.rounds, "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="corpus-bench-") as scratch:
        folder = Path(scratch)
        big, small = make_corpus(folder, args.tokens), make_corpus(folder, 100_000)
        one_line = folder / "one.txt"
        one_line.write_text("One short line.\n", encoding="utf-8")
        out = folder / "out.txt"
        address, env = (start_ray_cluster(folder) if args.ray else (None, None))
        sides = {f"seqtag P={p}": (lambda c, o, p=p: ours(args.model, c, o, p), True) for p in (1, 2)}
        sides.update({f"spaCy P={p}": (lambda c, o, p=p: spacy(args.spacy_python, c, o, p), False) for p in (1, 2)})
        if args.ray:
            sides["seqtag Ray 2x1"] = (lambda c, o: ours(args.model, c, folder / "parts", 2, ["--ray", address, "--actors", "2"]), True)
        figures: dict[str, dict[str, list]] = {name: {"tokens_per_s": [], "seconds": [], "rss": [], "rss_100k": [],
                                                      "startup": []} for name in sides}
        for round_ in range(args.rounds):
            for name, (command, conllu) in sides.items():
                seconds, rss = run_measured(command(big, out), env)
                target = out
                if "Ray" in name:
                    target = folder / "joined.conllu"
                    manifest = json.loads((folder / "parts" / "manifest.json").read_text())
                    with open(target, "wb") as joined:
                        for part in manifest["parts"]:
                            joined.write((folder / "parts" / part["file"]).read_bytes())
                tokens = count_tokens(target, conllu)
                figures[name]["tokens_per_s"].append(tokens / seconds)
                figures[name]["seconds"].append(seconds)
                figures[name]["rss"].append(rss)
                if "Ray" not in name:  # the driver's tree only: the actors live under the raylets
                    figures[name]["rss_100k"].append(run_measured(command(small, out), env)[1])
                figures[name]["startup"].append(run_measured(command(one_line, out), env)[0])
                print(f"round {round_ + 1} {name}: {tokens} tokens in {seconds:.1f} s = {tokens / seconds:,.0f} "
                      f"tokens/s, peak RSS {rss / 2**20:,.0f} MiB", file=sys.stderr, flush=True)
        if args.ray:
            subprocess.run([str(Path(sys.executable).with_name("ray")), "stop", "--force"], env=env, capture_output=True)
    summary = {}
    for name, values in figures.items():
        summary[name] = {key: statistics.median(v) for key, v in values.items() if v}
    for p in (1, 2):
        summary[f"seqtag P={p}"]["x_spacy"] = summary[f"seqtag P={p}"]["tokens_per_s"] / summary[f"spaCy P={p}"]["tokens_per_s"]
    results["median"] = summary
    print(f"\n{args.tokens:,} tokens of EWT dev raw text, {args.rounds} rounds, medians (whole commands, start-up included)")
    print(f"{'':18}{'tokens/s':>10}{'x spaCy':>9}{'seconds':>9}{'start-up s':>11}{'RSS 100k MiB':>14}{'RSS MiB':>9}")
    for name, row in summary.items():
        ratio = f"{row['x_spacy']:.2f}" if "x_spacy" in row else ""
        rss_small = f"{row['rss_100k'] / 2**20:,.0f}" if "rss_100k" in row else "-"
        print(f"{name:18}{row['tokens_per_s']:>10,.0f}{ratio:>9}{row['seconds']:>9.1f}{row['startup']:>11.1f}"
              f"{rss_small:>14}{row['rss'] / 2**20:>9,.0f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
