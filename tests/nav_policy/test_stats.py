import pytest

from nav_policy.stats import summarize_outcomes, wilson_interval


@pytest.mark.parametrize("k,n,lo,hi", [
    # Reference values of the Wilson score interval at 95%.
    (0, 10, 0.0, 0.2775),
    (1, 2, 0.0945, 0.9055),
    (23, 50, 0.3297, 0.5960),
    (9, 50, 0.0977, 0.3080),
    (50, 50, 0.9287, 1.0),
])
def test_wilson_known_values(k, n, lo, hi):
    a, b = wilson_interval(k, n)
    assert a == pytest.approx(lo, abs=5e-4)
    assert b == pytest.approx(hi, abs=5e-4)


def test_wilson_edge_cases():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_summary_counts_causes():
    s = summarize_outcomes(["collision", "success", "collision", "timeout"],
                           ["glass", None, "glass", None])
    assert s["eval/failure_rate"] == 0.5
    assert s["eval/failures_by_cause"] == {"glass": 2}
    assert s["eval/timeout_rate"] == 0.25
    lo, hi = s["eval/failure_rate_ci95"]
    assert lo < 0.5 < hi
