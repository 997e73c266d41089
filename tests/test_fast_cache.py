"""Checked fast paths kept on disk: a worker serves every kind of model from them without TensorFlow, and an entry
whose weights or answers were changed is refused like a fast path that disagrees with its SavedModel."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from training.common import fast_cache
from training.common.fast_path import FastPathMismatch
from training.dialog.saved_dialog import PROBE_CODE, SavedDialogModel

WORKER = """
import json, logging, sys
logging.basicConfig(level=logging.INFO)
from service import create_app
app = create_app({"models_dir": sys.argv[1], "batching": False})
client = app.test_client()
statuses = {name: client.get(f"/v1/models/{name}").get_json() for name in ("pos", "dialog-act", "slots")}
tags = client.post("/v1/models/pos:tag", json={"sentences": [["The", "dog", "barks", "."]]}).get_json()
session = client.post("/v1/dialogs", json={"model": "dialog-act"}).get_json()["session_id"]
turn = client.post(f"/v1/dialogs/{session}/turns", json={"tokens": ["Hello", "there"], "speaker": "A"})
print(json.dumps({"tensorflow": "tensorflow" in sys.modules, "statuses": statuses, "tags": tags,
                  "act": turn.get_json()}))
"""


def test_a_worker_serves_checked_fast_paths_without_tensorflow(tmp_path, random_tagger_dir, random_dialog_dirs,
                                                               schema_model_dir):
    from training.tagger.saved_tagger import SavedTagger

    models = tmp_path / "models"
    for name, source in (("pos", random_tagger_dir), ("dialog-act", random_dialog_dirs["dialog-act"]),
                         ("slots", schema_model_dir)):
        shutil.copytree(source, models / name / "1")
    env = {**os.environ, "SEQTAG_CACHE_DIR": str(tmp_path / "cache"), "SEQTAG_FAST_PATH_CACHE": "1"}
    runs = []
    for _ in range(2):  # the first fills the cache in a child process; the second finds it
        run = subprocess.run([sys.executable, "-c", WORKER, str(models)], capture_output=True, text=True, timeout=300,
                             env=env)
        assert run.returncode == 0, run.stderr[-3000:]
        runs.append((json.loads(run.stdout.strip().splitlines()[-1]), run.stderr))
    for answer, log in runs:
        assert answer["tensorflow"] is False
        for name, status in answer["statuses"].items():
            assert status["runtime"] == "onnx" and status["fast_path_checked_against"] == "cached_answers", (name, status)
        assert answer["act"]["label"] in answer["statuses"]["dialog-act"]["labels"]
    assert "checked in a child process" in runs[0][1] and "checked in a child process" not in runs[1][1]
    expected = SavedTagger(models / "pos" / "1", runtime="tensorflow").tag([["The", "dog", "barks", "."]])[0]
    for answer, _ in runs:  # the served tags are the SavedModel's
        assert answer["tags"]["results"][0]["tags"] == expected.tags


@pytest.mark.parametrize("tamper", ["answers", "weights"])
def test_an_entry_changed_after_its_check_is_refused(tmp_path, monkeypatch, random_dialog_dirs, tamper):
    monkeypatch.setenv("SEQTAG_CACHE_DIR", str(tmp_path / "cache"))
    model = random_dialog_dirs["dialog-act"]
    first = SavedDialogModel(model, runtime="onnx", fast_cache=True)
    assert "cache" not in first.fast_check
    second = SavedDialogModel(model, runtime="onnx", fast_cache=True)
    assert second.fast_check["cache"] == str(fast_cache.entry_for(model, PROBE_CODE))
    assert second.fast_check["max_difference"] <= 1e-5
    entry = fast_cache.entry_for(model, PROBE_CODE)
    name = "reference.npz" if tamper == "answers" else "weights.npz"
    with np.load(entry / name) as stored:
        arrays = dict(stored)
    key = max(arrays, key=lambda k: arrays[k].size if arrays[k].dtype.kind == "f" else -1)
    arrays[key] = arrays[key] + np.asarray(0.01, arrays[key].dtype)  # the largest float array, off by 0.01
    np.savez(entry / name, **arrays)
    with pytest.raises(FastPathMismatch):
        SavedDialogModel(model, runtime="onnx", fast_cache=True)
