"""``seqtag tag --ray`` on a real local Ray cluster of two nodes (a head and a second node, each started by ``ray
start`` on this machine): the parts it writes are, concatenated in the manifest's order, the local run's bytes, and
a node killed mid-job loses no document and writes none twice."""

from __future__ import annotations

import json
import os
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
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_health_check_period_ms": "1000",
           "RAY_health_check_timeout_ms": "1000", "RAY_health_check_failure_threshold": "2"}
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths have a length limit
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


def write_corpus(folder: Path) -> list[Path]:
    """Two text files of EWT dev's raw paragraphs (some 50k words in all)."""
    from benchmarks.raw_text_scores import write_raw_text
    from tests.conftest import EWT_DEV

    if not EWT_DEV.is_file():
        pytest.skip("UD English EWT not found")
    files = []
    for i in range(2):
        files.append(folder / f"part{i}.txt")
        write_raw_text(EWT_DEV, files[-1])
    return files


def test_parts_are_the_local_bytes_even_when_a_node_dies_mid_job(shipped_pos_fast_path, ray_cluster, tmp_path):
    address, node, env = ray_cluster
    files = write_corpus(tmp_path)
    model = ["--model", str(REPO / "models" / "pos"), "-q"]
    out = tmp_path / "parts"
    job = subprocess.Popen([str(SEQTAG), "tag", *model, "--ray", address, "--part-size", "6000", "--actors", "2",
                            *map(str, files), "-o", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    deadline = time.monotonic() + 240
    while len(list(out.glob("part-*"))) < 3 and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    written_before_kill = len(list(out.glob("part-*")))

    finished_before_kill = (out / "manifest.json").exists()
    os.killpg(node.pid, signal.SIGKILL)  # the second node, its raylet and its workers (an actor among them)
    stdout, stderr = job.communicate(timeout=300)
    assert job.returncode == 0, stderr[-3000:]
    local = tmp_path / "local.conllu"  # the same inputs on this machine, one process
    assert main(["tag", *model, *map(str, files), "-o", str(local)]) == 0
    assert not finished_before_kill and written_before_kill >= 3
    manifest = json.loads((out / "manifest.json").read_text())
    parts = [p["file"] for p in manifest["parts"]]
    assert manifest["complete"] and written_before_kill < len(parts)
    assert parts == [f"part-{i:05d}.conllu" for i in range(len(parts))]  # each once, in order
    assert sorted(p.name for p in out.glob("part-*")) == parts
    assert b"".join((out / p).read_bytes() for p in parts) == local.read_bytes()
    assert len({p["node"] for p in manifest["parts"]}) == 2  # both nodes tagged parts (the killed one before it died)
    assert manifest["documents"] == 2 and sum(p["words"] for p in manifest["parts"]) == manifest["words"] > 45_000
