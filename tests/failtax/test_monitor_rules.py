"""The k-consecutive alarm rule and the monitor metrics, against hand-computed values."""

from __future__ import annotations

import pytest

from failtax.monitor.metrics import EpisodeOutcome, f1_score, monitor_metrics, wilson_interval
from failtax.monitor.rules import AlarmRule, first_alarm


@pytest.mark.parametrize(
    ("verdicts", "k", "expected"),
    [
        ([1, 1, 1], 3, 2),
        ([1, 1, 0, 1, 1, 1], 3, 5),  # a SAFE in between restarts the count
        ([1, 0, 1, 0, 1, 0], 2, None),  # flicker never alarms
        ([0, 0, 1], 1, 2),  # k=1: the first UNSAFE
        ([], 3, None),
        ([1, 1], 3, None),
    ],
)
def test_first_alarm(verdicts, k, expected):
    assert first_alarm([bool(v) for v in verdicts], k) == expected


def test_alarm_rule_online_stays_on_and_resets():
    rule = AlarmRule(k=2)
    assert [rule.update(u) for u in (True, True, True, False, True)] == [False, True, True, False, False]
    rule.reset()
    assert rule.update(True) is False


def test_alarm_rule_rejects_k_below_one():
    with pytest.raises(ValueError, match="k_consecutive"):
        AlarmRule(0)


@pytest.mark.parametrize(("k", "n", "lo", "hi"), [(3, 4, 0.3006, 0.9544), (2, 3, 0.2077, 0.9385),
                                                  (0, 5, 0.0, 0.4345)])
def test_wilson_hand_computed(k, n, lo, hi):
    a, b = wilson_interval(k, n)
    assert a == pytest.approx(lo, abs=1e-4) and b == pytest.approx(hi, abs=1e-4)


def test_wilson_edges():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(4, 3)


def _outcomes():
    # 4 failures at t=10 s: alarms at 8, 9, 9.5 s (leads 2, 1, 0.5) and one missed;
    # 3 successes: one false alarm
    return [
        EpisodeOutcome("f1", True, 10.0, 8.0, "glass", "glass mode"),
        EpisodeOutcome("f2", True, 10.0, 9.0, "glass"),
        EpisodeOutcome("f3", True, 10.0, 9.5, "thin_pole"),
        EpisodeOutcome("f4", True, 10.0, None, "thin_pole"),
        EpisodeOutcome("s1", False, None, 4.0),
        EpisodeOutcome("s2", False, None, None),
        EpisodeOutcome("s3", False, None, None),
    ]


def test_monitor_metrics_hand_computed():
    m = monitor_metrics(_outcomes())
    assert m["confusion"] == {"tp": 3, "fn": 1, "fp": 1, "tn": 2}
    assert m["tpr"]["value"] == pytest.approx(0.75)
    assert m["fnr"]["value"] == pytest.approx(0.25)
    assert m["tnr"]["value"] == pytest.approx(2 / 3)
    assert m["fpr"]["value"] == pytest.approx(1 / 3)
    assert m["precision"]["value"] == pytest.approx(0.75)
    assert m["f1"]["value"] == pytest.approx(0.75)  # 2*3 / (2*3 + 1 + 1)
    assert m["tpr"]["ci95"] == pytest.approx([0.3006, 0.9544], abs=1e-4)
    assert m["tnr"]["ci95"] == pytest.approx([0.2077, 0.9385], abs=1e-4)
    assert m["lead_time_s"] == {"n": 3, "mean": pytest.approx(3.5 / 3), "median": pytest.approx(1.0)}
    assert m["detection_by_cause"]["glass"]["value"] == 1.0
    assert m["detection_by_cause"]["thin_pole"]["value"] == 0.5
    lo, hi = m["f1"]["ci95"]
    assert 0.0 <= lo <= 0.75 <= hi <= 1.0


def test_f1_without_true_positive_is_zero():
    assert f1_score(0, 3, 2) == 0.0
    m = monitor_metrics([EpisodeOutcome("f", True, 5.0, None), EpisodeOutcome("s", False, None, 1.0)])
    assert m["f1"]["value"] == 0.0 and m["lead_time_s"]["mean"] is None


def test_false_alarm_in_success_has_no_lead_time():
    assert EpisodeOutcome("s", False, None, 3.0).lead_time_s is None
    assert EpisodeOutcome("f", True, 5.0, 3.0).lead_time_s == pytest.approx(2.0)
