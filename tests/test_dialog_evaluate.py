"""Dialog scores: accuracy and macro-F1 for acts, micro/macro-F1 and exact match for action sets, thresholds."""

import numpy as np
import pytest

from training.dialog.evaluate import act_metrics, action_metrics, format_dialog_report, tune_thresholds


def test_act_metrics_count_unknown_predictions_as_wrong():
    metrics = act_metrics(["sd", "sd", "b", "qy"], ["sd", "b", "b", "sd"])
    assert metrics["accuracy"] == pytest.approx(0.5) and metrics["utterances"] == 4
    # F1: sd 0.5 (p 1/2, r 1/2), b 2/3 (p 1/2, r 1), qy 0
    assert metrics["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0) / 3)
    assert metrics["per_label"]["qy"]["support"] == 1
    assert "accuracy 0.5000" in format_dialog_report(metrics)


def test_action_metrics_micro_macro_and_exact_match():
    gold = [["GOODBYE"], ["REQUEST(city)", "INFORM(price)"], []]
    predicted = [["GOODBYE"], ["REQUEST(city)"], ["OFFER(time)"]]
    metrics = action_metrics(gold, predicted)
    # tp 2, fp 1, fn 1 -> micro-F1 2/3; exact: turn 1 only
    assert metrics["micro_f1"] == pytest.approx(2 / 3) and metrics["exact_match"] == pytest.approx(1 / 3)
    assert metrics["turns"] == 3
    # macro over the labels present in gold: GOODBYE 1, REQUEST(city) 1, INFORM(price) 0
    assert metrics["macro_f1"] == pytest.approx(2 / 3)


def test_thresholds_per_label_where_supported_else_global():
    rng = np.random.default_rng(0)
    targets = np.zeros((400, 3), dtype=np.float32)
    targets[:200, 0] = 1  # label 0: positives score 0.3..0.4, negatives 0..0.2 -> separated by 0.2..0.3
    targets[:100, 1] = 1  # label 1: positives 0.8..1, negatives 0.5..0.7 -> separated by 0.7..0.8
    targets[:3, 2] = 1  # label 2: 3 positives, below min_support -> the global threshold
    probabilities = np.zeros_like(targets)
    probabilities[:, 0] = np.where(targets[:, 0] > 0, rng.uniform(0.3, 0.4, 400), rng.uniform(0.0, 0.2, 400))
    probabilities[:, 1] = np.where(targets[:, 1] > 0, rng.uniform(0.8, 1.0, 400), rng.uniform(0.5, 0.7, 400))
    probabilities[:, 2] = rng.uniform(0, 1, 400)
    thresholds, global_threshold = tune_thresholds(probabilities, targets, min_support=10)
    assert 0.2 <= thresholds[0] <= 0.3 and 0.7 <= thresholds[1] <= 0.8  # any separating threshold
    assert thresholds[2] == pytest.approx(global_threshold)
