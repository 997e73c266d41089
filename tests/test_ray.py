"""seqtag on a real local Ray cluster of two nodes (a head and a second node, each started by ``ray start`` on this
machine):

- ``seqtag train pos --workers 2 --ray``: Ray Train's workers train the very model one process trains;
- ``seqtag tune pos``: a 4-trial sweep on Ray Tune, where ASHA stops the weak trial and the best trial's best
  epoch is exported;
- ``seqtag tag --ray``: the parts it writes are, concatenated in the manifest's order, the local run's bytes, and
  a node killed mid-job loses no document and writes none twice (last: it leaves the cluster one node short).
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import first_sentences
from training.cli import main
from training_runs import FAST_OPTIONS, max_weight_difference, run_seqtag, train_args

pytest.importorskip("ray.data", reason="the ray extra is not installed")

REPO = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")
SEQTAG = Path(sys.executable).with_name("seqtag")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_node(arguments: list[str], env: dict) -> subprocess.Popen:
    """``ray start ... --block`` in a process group of its own (its raylet and workers with it), once it says the
    node runs."""
    node = subprocess.Popen([str(RAY), "start", *arguments, "--block"], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    said = []
    for line in node.stdout:
        said.append(line)
        if "Ray runtime started" in line:
            return node
    pytest.fail("ray start failed: " + "".join(said[-20:]))


@pytest.fixture(scope="module")
def ray_cluster():
    """A head node (2 CPUs) and a second node (1 CPU), each ``ray start --block`` in its own process group, so that
    a test can kill a node whole; both groups are killed afterwards."""
    # A dead node is declared dead after 2 missed health checks a second apart (Ray's defaults take 30 s or more)
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths have a length limit
    # Token authentication, as a shared machine's cluster should run, with a token of the test's own: since Ray 2.59
    # a ~/.ray/auth_token left by any ray.init() (--ray local) turns it on for 'ray start --head', and a node that
    # joins without RAY_AUTH_MODE=token is then refused
    token = Path(temp) / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_health_check_period_ms": "1000",
           "RAY_health_check_timeout_ms": "1000", "RAY_health_check_failure_threshold": "2",
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    port = free_port()
    nodes = [start_node(["--head", "--port", str(port), "--num-cpus", "2", "--include-dashboard", "false",
                         "--temp-dir", temp, "--disable-usage-stats"], env)]
    try:
        address = f"127.0.0.1:{port}"
        nodes.append(start_node(["--address", address, "--num-cpus", "1"], env))
        yield address, nodes[1], env
    finally:
        for node in reversed(nodes):
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)
            node.wait(timeout=30)
            node.stdout.close()
        shutil.rmtree(temp, ignore_errors=True)


def write_corpus(folder: Path, copies: int = 2, file_chars: int = 6000) -> list[Path]:
    """EWT dev's raw paragraphs, ``copies`` times over (some 25k words each), cut at paragraph ends into text files
    of about ``file_chars`` characters: a folder of short documents, so that each is a shard and a part of its own
    and the job has some 40 parts to spread over the nodes."""
    from benchmarks.raw_text_scores import write_raw_text
    from tests.conftest import EWT_DEV

    if not EWT_DEV.is_file():
        pytest.skip("UD English EWT not found")
    write_raw_text(EWT_DEV, folder / "dev.txt")
    paragraphs = (folder / "dev.txt").read_text(encoding="utf-8").split("\n\n")
    (folder / "dev.txt").unlink()
    files, chunk = [], []
    for paragraph in paragraphs * copies:
        chunk.append(paragraph.strip("\n"))
        if sum(map(len, chunk)) >= file_chars:
            files.append(folder / f"doc{len(files):03d}.txt")
            files[-1].write_text("\n\n".join(chunk) + "\n", encoding="utf-8")
            chunk = []
    if chunk:
        files.append(folder / f"doc{len(files):03d}.txt")
        files[-1].write_text("\n\n".join(chunk) + "\n", encoding="utf-8")
    return files


def wait_for_manifest(out: Path, job: subprocess.Popen, ready, seconds: float = 240) -> dict | None:
    """The job's in-progress manifest once ``ready(manifest)`` holds, or None if the job ends or time runs out."""
    deadline = time.monotonic() + seconds
    while job.poll() is None and time.monotonic() < deadline:
        try:
            manifest = json.loads((out / "manifest.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            manifest = None
        if manifest is not None and ready(manifest):
            return manifest
        time.sleep(0.05)
    return None


def test_two_ray_workers_train_the_one_process_model(ray_cluster, torch_checkpoint, ewt_slices, tmp_path):
    """``seqtag train pos --workers 2 --ray ADDRESS`` (Ray Train's TorchTrainer, gloo): two workers of batch 8 end
    with the weights of the one-process torch run with the same global batch of 16, to 1e-5, and the same dev
    history. (A worker killed mid-run, and the export, are tested under torchrun: tests/test_backends.py.)"""
    address, _, env = ray_cluster
    single, _ = torch_checkpoint
    checkpoint, root = tmp_path / "checkpoint", tmp_path / "models" / "pos"
    # The launcher under torch too: it then leaves the export to a command (under TensorFlow)
    result = run_seqtag(train_args(ewt_slices, root, checkpoint, "--dropout", "0", "--batch-size", "8", "--workers",
                                   "2", "--ray", address), backend="torch", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"seqtag export --from-checkpoint {checkpoint}" in result.stderr and not root.exists()
    assert "(RayTrainWorker pid=" in result.stderr and "epoch 2: loss" in result.stderr  # rank 0's log, here

    state = json.loads((checkpoint / "training.json").read_text())
    training = state["metadata"]["training"]
    assert training["backend"] == "torch" and training["strategy"] == "torch.distributed (gloo)"
    assert training["workers"] == 2 and training["global_batch"] == 16
    expected = json.loads((single / "checkpoint" / "training.json").read_text())["metadata"]["training"]["history"]
    assert [r["dev_accuracy"] for r in training["history"]] == [r["dev_accuracy"] for r in expected]
    assert max_weight_difference(checkpoint, single / "checkpoint") < 1e-5


def test_a_sweep_of_four_trials_stops_the_weak_one_and_exports_the_best(ray_cluster, ewt_slices, tmp_path):
    """``seqtag tune pos --trials 4`` (under torch, so the trials are torch's too: no graphs to trace): the draws are
    the seeded ones; trial 3 (a learning rate 100 times too small) starts once others have scored epoch 1, and ASHA
    stops it there; the table lists every trial; ``<sweep>/best`` is the best trial's best epoch, and its export
    (under TensorFlow, as the command says) is checked on the probe and carries the sweep."""
    from training.common.sweep import draw_trials
    from training.tagger.saved_tagger import SavedTagger

    address, _, env = ray_cluster
    _, dev = ewt_slices
    train = tmp_path / "train.conllu"  # 150 sentences: 4 trials of 2 epochs share 2 busy cores
    train.write_text(first_sentences(ewt_slices[0], 150), encoding="utf-8")
    space = {"learning_rate": {"choice": [0.0001, 0.01, 0.02]}, "hidden": {"choice": [16, 24, 32]}}
    (tmp_path / "space.json").write_text(json.dumps(space))
    drawn = draw_trials(space, 4, seed=12)
    assert [d["learning_rate"] for d in drawn][3] == 0.0001 and 0.0001 not in [d["learning_rate"] for d in drawn][:3]
    sweep, root = tmp_path / "sweep", tmp_path / "models" / "pos"
    result = run_seqtag(["tune", "pos", "--train", str(train), "--dev", str(dev), "--out", str(root), "--search",
                         str(tmp_path / "space.json"), "--trials", "4", "--ray", address, "--sweep-dir", str(sweep),
                         *FAST_OPTIONS, "--seed", "12"], backend="torch", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"seqtag export --from-checkpoint {sweep / 'best'} --out {root}" in result.stderr and not root.exists()

    with open(sweep / "trials.csv", newline="") as table:
        rows = list(csv.DictReader(table))
    assert [int(r["trial"]) for r in rows] == [0, 1, 2, 3]
    assert [float(r["option learning_rate"]) for r in rows] == [d["learning_rate"] for d in drawn]
    assert [int(r["option hidden"]) for r in rows] == [d["hidden"] for d in drawn]
    assert rows[3]["status"] == "stopped by ASHA" and rows[3]["epochs"] == "1"
    # the others: which of them reach epoch 1 first (and go on whatever their score) depends on the machine's load
    assert all((r["status"], r["epochs"]) in (("completed", "2"), ("stopped by ASHA", "1")) for r in rows[:3])
    scores = [float(r["best_dev_score"]) for r in rows]
    best = max(range(4), key=lambda i: (scores[i], -i))
    assert scores[best] > scores[3] + 0.2

    assert main(["export", "--from-checkpoint", str(sweep / "best"), "--out", str(root)]) == 0
    metadata = json.loads((root / "1" / "metadata.json").read_text())
    assert metadata["sweep"]["best_trial"] == best and len(metadata["sweep"]["trials"]) == 4
    assert metadata["sweep"]["search_space"] == space and metadata["sweep"]["scheduler"]["name"] == "ASHA"
    assert metadata["trial"] == {"number": best, "options": drawn[best]}
    assert metadata["config"]["learning_rate"] == drawn[best]["learning_rate"]
    assert metadata["config"]["hidden"] == drawn[best]["hidden"]
    # the export computes in TensorFlow: a near tie may flip one of dev's 1,881 tokens
    assert metadata["metrics"]["dev"]["accuracy"] == pytest.approx(scores[best], abs=1e-3)
    assert metadata["export_check"]["trained_under"] == "torch" and metadata["export_check"]["max_abs_difference"] < 1e-5
    assert metadata["command"].startswith("seqtag tune pos")
    assert len(SavedTagger(root / "1").tag([["The", "dog", "barks", "."]])[0].tags) == 4


def test_parts_are_the_local_bytes_even_when_a_node_dies_mid_job(shipped_pos_fast_path, ray_cluster, tmp_path):
    address, node, env = ray_cluster
    files = write_corpus(tmp_path)
    model = ["--model", str(REPO / "models" / "pos"), "-q"]
    out = tmp_path / "parts"
    job = subprocess.Popen([str(SEQTAG), "tag", *model, "--ray", address, "--part-size", "6000", "--actors", "2",
                            *map(str, files), "-o", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    # Kill the second node once the in-progress manifest shows parts from both nodes, so that it dies holding work
    # it had started, after tagging some: the actor placement (SPREAD) and its start time vary with the machine's load
    seen = wait_for_manifest(out, job, lambda m: len(m["parts"]) >= 3 and len({p["node"] for p in m["parts"]}) == 2)
    assert seen is not None and not seen["complete"], "no in-progress manifest with parts from both nodes"
    os.killpg(node.pid, signal.SIGKILL)  # the second node, its raylet and its workers (an actor among them)
    stdout, stderr = job.communicate(timeout=300)
    assert job.returncode == 0, stderr[-3000:]
    local = tmp_path / "local.conllu"  # the same inputs on this machine, one process
    assert main(["tag", *model, *map(str, files), "-o", str(local)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    parts = [p["file"] for p in manifest["parts"]]
    assert manifest["complete"] and len(seen["parts"]) < len(parts)
    assert manifest["parts"][:len(seen["parts"])] == seen["parts"]  # what was written before the kill stands
    assert parts == [f"part-{i:05d}.conllu" for i in range(len(parts))]  # each once, in order
    assert sorted(p.name for p in out.glob("part-*")) == parts
    assert b"".join((out / p).read_bytes() for p in parts) == local.read_bytes()
    assert {p["node"] for p in manifest["parts"]} == {p["node"] for p in seen["parts"]}  # no third node appeared
    assert manifest["documents"] == len(files) and sum(p["words"] for p in manifest["parts"]) == manifest["words"] > 45_000
