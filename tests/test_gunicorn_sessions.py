"""Dialog sessions on a real gunicorn with 2 workers sharing a real Redis: 50 sessions x 20 turns posted
concurrently give exactly the offline ``serve`` outputs; several workers without Redis are refused."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading

import numpy as np

from training.dialog.saved_dialog import DialogTurnInput, SavedDialogModel

from test_gunicorn import REPO, call, free_port, wait_until

SENTENCES = ["Do you have any pets?", "Yes, two cats.", "Oh, nice.", "Uh-huh.", "What are their names?",
             "I don't know, really.", "Well, it depends on the weather.", "Right.", "That's a good point.",
             "We went camping last summer and it rained every single day."]
SESSIONS, TURNS = 50, 20


def start(tmp_path, env_changes):
    env = {**os.environ, "SEQTAG_HOST": "127.0.0.1", "SEQTAG_POLL_INTERVAL_SECONDS": "0", "SEQTAG_ACCESS_LOG": "",
           **env_changes}
    log = open(tmp_path / "gunicorn.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "service/gunicorn_conf.py"], cwd=REPO, env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return process, log


def stop(process, log):
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    log.close()


def test_50_sessions_x_20_turns_on_2_workers_with_redis(tmp_path, random_dialog_dirs, redis_url):
    models = tmp_path / "models"
    shutil.copytree(random_dialog_dirs["dialog-act"], models / "dialog-act" / "1")
    port = free_port()
    process, log = start(tmp_path, {"PORT": str(port), "SEQTAG_MODELS_DIR": str(models), "SEQTAG_WORKERS": "2",
                                    "SEQTAG_THREADS": "8", "SEQTAG_REDIS_URL": redis_url})
    try:
        wait_until(lambda: call(port, "/readyz")[0] == 200, 120, "readiness", process)
        rng = random.Random(7)
        dialogs = [[("AB"[t % 2], rng.choice(SENTENCES)) for t in range(TURNS)] for _ in range(SESSIONS)]
        answers = [[None] * TURNS for _ in range(SESSIONS)]
        firsts, failures = {}, []

        def converse(i):
            status, session = call(port, "/v1/dialogs", {"model": "dialog-act"})
            if status != 201:
                failures.append((i, status, session))
                return
            for t, (speaker, text) in enumerate(dialogs[i]):
                status, answer = call(port, f"/v1/dialogs/{session['session_id']}/turns", {"text": text, "speaker": speaker})
                if status != 200 or answer["turn"] != t + 1:
                    failures.append((i, t, status, answer))
                    return
                answers[i][t] = answer
            # Reset, then the first turn again: the first answer again.
            call(port, f"/v1/dialogs/{session['session_id']}/reset", {})
            firsts[i] = call(port, f"/v1/dialogs/{session['session_id']}/turns",
                             {"text": dialogs[i][0][1], "speaker": dialogs[i][0][0]})[1]

        threads = [threading.Thread(target=converse, args=(i,)) for i in range(SESSIONS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert not failures, failures[:3]

        model = SavedDialogModel(models / "dialog-act" / "1")
        offline = model.predict([[DialogTurnInput([t.text for t in model.tokenizer.tokenize(text)], speaker) for speaker, text in dialog]
                                 for dialog in dialogs])
        for i in range(SESSIONS):
            served = np.array([[answers[i][t]["scores"][label] for label in model.labels] for t in range(TURNS)])
            np.testing.assert_allclose(served, offline[i], atol=1e-5)
            assert [answers[i][t]["label"] for t in range(TURNS)] == [model.labels[k] for k in offline[i].argmax(-1)]
            # The same first turn from a zero state again; batched with other sessions' turns this time,
            # so equal up to float noise (scores are rounded to 6 decimals: a last digit may flip).
            assert firsts[i]["turn"] == 1 and firsts[i]["label"] == answers[i][0]["label"]
            np.testing.assert_allclose([firsts[i]["scores"][label] for label in model.labels],
                                       [answers[i][0]["scores"][label] for label in model.labels], atol=1e-5)
    finally:
        stop(process, log)
    assert "Traceback" not in (tmp_path / "gunicorn.log").read_text()


def test_several_workers_without_redis_are_refused(tmp_path):
    process, log = start(tmp_path, {"PORT": str(free_port()), "SEQTAG_WORKERS": "2", "SEQTAG_REDIS_URL": ""})
    try:
        assert process.wait(timeout=60) != 0
    finally:
        stop(process, log)
    assert "SEQTAG_REDIS_URL" in (tmp_path / "gunicorn.log").read_text()


def worker_pids(master: int) -> set[int]:
    path = f"/proc/{master}/task/{master}/children"
    return set(int(p) for p in open(path).read().split()) if os.path.exists(path) else set()


def _pottery_tags(port: int) -> list[set[str]]:
    """The tags of Pottery_1 turns, asked on 8 fresh connections (gunicorn hands them to both workers)."""
    answers = [call(port, "/v1/models/slots:tag", {"sentences": [["fire", "it", "with", "a", "blue", "glaze"]],
                                                    "service": "Pottery_1"}) for _ in range(8)]
    assert [status for status, _ in answers] == [200] * 8, answers
    return [set(body["results"][0]["tags"]) for _, body in answers]


def test_redis_sessions_survive_a_reload_of_the_workers(tmp_path, random_dialog_dirs, schema_model_dir, redis_url):
    """... and so does a service registered through one worker: every worker answers for it, before the reload and
    after it (new processes, as after a restart)."""
    from test_schema_guided import POTTERY, POTTERY_SPAN_TAGS

    models = tmp_path / "models"
    shutil.copytree(random_dialog_dirs["dialog-act"], models / "dialog-act" / "1")
    shutil.copytree(schema_model_dir, models / "slots" / "1")
    port = free_port()
    process, log = start(tmp_path, {"PORT": str(port), "SEQTAG_MODELS_DIR": str(models), "SEQTAG_WORKERS": "2",
                                    "SEQTAG_THREADS": "4", "SEQTAG_REDIS_URL": redis_url})
    conversation = [("A", "Do you have any pets?"), ("B", "Yes, two cats."), ("A", "Oh, nice."), ("B", "Uh-huh.")]
    try:
        wait_until(lambda: call(port, "/readyz")[0] == 200, 120, "readiness", process)
        assert call(port, "/v1/models/slots:tag", {"sentences": [["fire"]], "service": "Pottery_1"})[0] == 404
        assert call(port, "/v1/services/Pottery_1", POTTERY, method="PUT")[0] == 201
        assert all(tags <= POTTERY_SPAN_TAGS for tags in _pottery_tags(port))
        session_id = call(port, "/v1/dialogs", {"model": "dialog-act"})[1]["session_id"]
        answers = [call(port, f"/v1/dialogs/{session_id}/turns", {"text": text, "speaker": speaker})[1]
                   for speaker, text in conversation[:2]]
        before = worker_pids(process.pid)
        os.kill(process.pid, signal.SIGHUP)  # gunicorn: start new workers, stop the old ones gracefully
        wait_until(lambda: len(worker_pids(process.pid)) == 2 and not worker_pids(process.pid) & before, 120,
                   "new workers", process)
        wait_until(lambda: call(port, "/readyz")[0] == 200, 120, "readiness after the reload", process)
        answers += [call(port, f"/v1/dialogs/{session_id}/turns", {"text": text, "speaker": speaker})[1]
                    for speaker, text in conversation[2:]]
        assert all(tags <= POTTERY_SPAN_TAGS for tags in _pottery_tags(port))  # the new workers read it from Redis
    finally:
        stop(process, log)
    assert [a["turn"] for a in answers] == [1, 2, 3, 4]
    model = SavedDialogModel(models / "dialog-act" / "1")
    offline = model.predict([[DialogTurnInput([t.text for t in model.tokenizer.tokenize(text)], speaker) for speaker, text in conversation]])[0]
    served = np.array([[a["scores"][label] for label in model.labels] for a in answers])
    np.testing.assert_allclose(served, offline, atol=1e-5)
