"""``seqtag tag --ray`` on a real local Ray cluster of two nodes (a head and a second node, each started by ``ray
start`` on this machine): the parts it writes are, concatenated in the manifest's order, the local run's bytes, and
a node killed mid-job loses no document and writes none twice."""

from __future__ import annotations

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

from training.cli import main

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
