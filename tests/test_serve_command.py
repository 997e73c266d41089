"""``seqtag serve``: the same gunicorn service as ``make serve``, started from any directory (the gunicorn
config is found in the installed package, not as a file of the checkout). It serves, tags, and stops on
SIGTERM; bad options stop it at once with a message."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from test_gunicorn import call, free_port, wait_until

SEQTAG = Path(sys.executable).with_name("seqtag")


def serve_env(tmp: Path, **extra) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SEQTAG_") and key != "PORT"}
    return {**env, "SEQTAG_HOST": "127.0.0.1", "SEQTAG_POLL_INTERVAL_SECONDS": "0", "SEQTAG_THREADS": "4",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp), **extra}


def test_seqtag_serve_starts_gunicorn_tags_and_stops(tmp_path, random_tagger_dir):
    models = tmp_path / "my-models"
    shutil.copytree(random_tagger_dir, models / "pos" / "1")
    workdir = tmp_path / "elsewhere"  # not the checkout: nothing is found by a relative path
    workdir.mkdir()
    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    process = subprocess.Popen([str(SEQTAG), "serve", "--models", str(models), "--port", str(port), "--workers", "1"],
                               cwd=workdir, env=serve_env(tmp_path), stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        wait_until(lambda: call(port, "/readyz")[0] == 200, 120, "seqtag serve to be ready", process)
        status, answer = call(port, "/v1/models/pos:tag", {"sentences": [["The", "dog", "barks", "."]]})
        assert status == 200 and answer["model"] == {"name": "pos", "version": 1}
        assert answer["results"][0]["tokens"] == ["The", "dog", "barks", "."] and len(answer["results"][0]["tags"]) == 4
        # The command became gunicorn's master (exec): signals reach gunicorn itself.
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
        assert b"gunicorn" in cmdline and b"python:service.gunicorn_conf" in cmdline
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
    text = (tmp_path / "serve.log").read_text()
    assert f"Listening at: http://127.0.0.1:{port}" in text and "Traceback" not in text, text[-2000:]


def test_seqtag_serve_refuses_bad_options_at_once(tmp_path, random_tagger_dir):
    models = tmp_path / "models"
    shutil.copytree(random_tagger_dir, models / "pos" / "1")
    missing = subprocess.run([str(SEQTAG), "serve", "--models", str(tmp_path / "nowhere")], cwd=tmp_path,
                             env=serve_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "no such models directory" in missing.stderr
    # Several workers would scatter in-process sessions: gunicorn's config refuses before any worker starts.
    scattered = subprocess.run([str(SEQTAG), "serve", "--models", str(models), "--port", str(free_port()),
                                "--workers", "2"], cwd=tmp_path, env=serve_env(tmp_path), capture_output=True,
                               text=True, timeout=60)
    assert scattered.returncode != 0 and "SEQTAG_REDIS_URL" in scattered.stderr
    usage = subprocess.run([str(SEQTAG), "serve", "--port", "eighty"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "--port" in usage.stderr


def test_the_cli_loads_neither_the_service_nor_keras_before_a_command_needs_them():
    """``training.cli`` imports no service module, Keras or TensorFlow at module level (``seqtag serve`` hands
    the process to gunicorn without them); the serve command finds the gunicorn config (which imports only
    the light ``service`` package) and loads none of them either."""
    script = ("import sys\nfrom training import cli\ncli.main(['serve', '--models', '/nonexistent'])\n"
              "loaded = {name for name in sys.modules if name.startswith('service.')}\n"
              "loaded |= {name.split('.')[0] for name in sys.modules} & {'keras', 'tensorflow', 'flask', 'gunicorn'}\n"
              "print(sorted(loaded))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "[]", (result.stdout, result.stderr[-2000:])
    assert "no such models directory" in result.stderr
