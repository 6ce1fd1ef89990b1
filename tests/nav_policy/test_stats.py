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


def test_paired_difference_uses_the_discordant_episodes():
    from nav_policy.stats import paired_difference

    # 30 episodes both fail, 5 only the first, 20 only the second, 145 neither.
    a = [True] * 30 + [True] * 5 + [False] * 20 + [False] * 145
    b = [True] * 30 + [False] * 5 + [True] * 20 + [False] * 145
    r = paired_difference(a, b)
    assert (r["only_a_failed"], r["only_b_failed"], r["episodes"]) == (5, 20, 200)
    assert r["difference"] == pytest.approx(-0.075)
    lo, hi = r["ci95"]
    assert lo < -0.075 < hi < 0  # a clear improvement ...
    assert r["mcnemar_p"] == pytest.approx(0.004077, abs=1e-5)  # 2 * P(Bin(25, .5) <= 5)
    # ... which two separate Wilson intervals would not show: they overlap.
    assert wilson_interval(35, 200)[1] > wilson_interval(50, 200)[0]
    same = paired_difference(a, a)
    assert same["difference"] == 0 and same["mcnemar_p"] == 1.0
    with pytest.raises(ValueError, match="same episodes"):
        paired_difference(a, b[:-1])


def test_replicate_mean_t_interval():
    from nav_policy.stats import replicate_mean

    r = replicate_mean([0.30, 0.34, 0.38])
    assert r["mean"] == pytest.approx(0.34) and r["sd"] == pytest.approx(0.04)
    # t(0.975, 2 df) = 4.303
    assert r["ci95"] == pytest.approx([0.34 - 4.303 * 0.04 / 3 ** 0.5,
                                       0.34 + 4.303 * 0.04 / 3 ** 0.5], abs=1e-4)
    assert replicate_mean([0.1, 0.9], bounds=(0.0, 1.0))["ci95"] == [0.0, 1.0]
    one = replicate_mean([0.2])
    assert one["sd"] is None and one["ci95"] is None and one["replicates"] == 1
    with pytest.raises(ValueError, match="no replicates"):
        replicate_mean([])


def test_paired_t_test_by_hand():
    from nav_policy.stats import paired_t_test

    # differences 1, 2, 3: mean 2, sd 1, se 1/sqrt(3), t = 2 sqrt(3) = 3.4641, df 2.
    # For 2 degrees of freedom the t distribution has a closed form: two-sided
    # p = 1 - |t| / sqrt(t^2 + 2) = 1 - 3.4641 / sqrt(14) = 0.07418.
    r = paired_t_test([1.0, 2.0, 3.0])
    assert r["t"] == pytest.approx(2 * 3 ** 0.5)
    assert r["df"] == 2
    assert r["p"] == pytest.approx(1 - 12 ** 0.5 / 14 ** 0.5, abs=1e-9)
    assert paired_t_test([0.1])["p"] is None
    assert paired_t_test([0.0, 0.0, 0.0])["p"] == 1.0
    assert paired_t_test([-0.05, -0.05])["p"] == 0.0


def test_replicate_t_interval_by_hand():
    from nav_policy.stats import replicate_mean

    # mean 2, sd 1, n 3; t(0.975, 2) = 4.302653 (tables): 2 +- 4.302653 / sqrt(3)
    r = replicate_mean([1.0, 2.0, 3.0])
    assert r["ci95"] == pytest.approx([2 - 2.4841377, 2 + 2.4841377], abs=1e-6)
    # the committed full run's semantic - uniform differences (docs/LOOP.md):
    # -2.75, -10.5, -10.75 points: mean -8.0, sd 4.548, t interval [-19.30, +3.30]
    r = replicate_mean([-0.0275, -0.105, -0.1075], bounds=(-1, 1))
    assert r["mean"] == pytest.approx(-0.08)
    assert r["ci95"] == pytest.approx([-0.19299, 0.03299], abs=1e-4)


def test_wilson_by_hand():
    # 10 failures of 100: centre (0.1 + 1.96^2/200) / (1 + 1.96^2/100) = 0.11480;
    # half 1.96 sqrt(0.09/100 + 1.96^2/40000) / 1.038415 = 0.06005 -> [0.0552, 0.1744]
    lo, hi = wilson_interval(10, 100)
    assert (lo, hi) == pytest.approx((0.05523, 0.17437), abs=1e-4)
