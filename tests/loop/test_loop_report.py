"""Pooling replicates in the loop report: per-replicate values, t intervals, pooled pairs."""

from __future__ import annotations

import json
import re

import pytest

from common import atomic_write_json
from loop.config import LoopConfig
from loop.report import collect_results, report_html, report_markdown, split_policy_name
from nav_policy.stats import summarize_outcomes

N = 20


def _write_eval(out, policy, failed):
    """evals/<policy>/in_distribution with episode i failed when i in `failed`."""
    d = out / "evals" / policy / "in_distribution"
    d.mkdir(parents=True)
    outcomes = ["collision" if i in failed else "success" for i in range(N)]
    rows = [{"index": i, "outcome": o} for i, o in enumerate(outcomes)]
    (d / "rollouts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    atomic_write_json(d / "summary.json", summarize_outcomes(
        outcomes, ["glass" if o == "collision" else None for o in outcomes]))


@pytest.fixture
def loop_dir(tmp_path):
    # base fails 10 of 20; uniform fails 6 then 8; semantic 3 then 9 (a noisy arm).
    _write_eval(tmp_path, "base", set(range(10)))
    _write_eval(tmp_path, "uniform", set(range(6)))
    _write_eval(tmp_path, "uniform@r1", set(range(8)))
    _write_eval(tmp_path, "targeted_semantic", {0, 1, 2})
    _write_eval(tmp_path, "targeted_semantic@r1", set(range(9)))
    return tmp_path


def test_policy_names_split_into_arm_replicate_cycle():
    assert split_policy_name("uniform") == ("uniform", 0, "")
    assert split_policy_name("targeted_semantic@r2@cycle1") == ("targeted_semantic", 2, "@cycle1")
    assert split_policy_name("uniform@cycle0") == ("uniform", 0, "@cycle0")


def test_replicates_pool_rates_and_pair_within_each_replicate(loop_dir):
    res = collect_results(LoopConfig(arms=["targeted_semantic", "uniform"], replicates=2),
                          loop_dir)
    # A replicate is compared with the uniform policy of its own replicate.
    assert res["paired"]["targeted_semantic@r1 vs uniform"]["in_distribution"][
        "difference"] == pytest.approx((9 - 8) / N)
    reps = res["replicates"]
    assert reps["count"] == 2
    sem = reps["arms"]["targeted_semantic"]["in_distribution"]
    assert sem["policies"] == ["targeted_semantic", "targeted_semantic@r1"]
    assert sem["failure_rates"] == [0.15, 0.45]
    assert sem["mean"]["mean"] == pytest.approx(0.30)
    assert sem["mean"]["sd"] == pytest.approx(0.3 / 2 ** 0.5)
    # t interval with 1 degree of freedom: 0.30 +- 12.706 * sd / sqrt(2), clipped to a rate
    assert sem["mean"]["ci95"] == [0.0, 1.0]
    assert sem["pooled"]["failures"] == 12 and sem["pooled"]["rollouts"] == 40
    assert sem["pooled"]["relative_reduction"] == pytest.approx((0.5 - 0.3) / 0.5)
    diff = reps["paired"]["targeted_semantic vs uniform"]["in_distribution"]
    assert diff["differences"] == pytest.approx([-3 / N, 1 / N])
    assert diff["pooled"]["episodes"] == 40
    assert (diff["pooled"]["only_a_failed"], diff["pooled"]["only_b_failed"]) == (1, 3)
    assert set(reps["paired"]) == {"targeted_semantic vs uniform", "targeted_semantic vs base",
                                   "uniform vs base"}
    md = report_markdown(res)
    assert "## Replicates: up to 2 per arm" in md and "15.0%, 45.0%" in md


def test_no_replicates_no_replicate_section(loop_dir):
    for p in ("uniform@r1", "targeted_semantic@r1"):
        for f in (loop_dir / "evals" / p / "in_distribution").iterdir():
            f.unlink()
        (loop_dir / "evals" / p / "in_distribution").rmdir()
        (loop_dir / "evals" / p).rmdir()
    res = collect_results(LoopConfig(arms=["targeted_semantic", "uniform"]), loop_dir)
    assert res["replicates"] == {}
    assert "Replicates" not in report_markdown(res)


def test_report_html_is_one_file_and_escapes_model_written_names(loop_dir):
    from PIL import Image

    from common.html import png_data_uri

    res = collect_results(LoopConfig(arms=["targeted_semantic", "uniform"], replicates=2), loop_dir)
    res["taxonomies"] = [{
        "cycle": 0, "policy": "base", "outliers": 0,
        "mining": {"rollouts": 20, "failures": 10, "failure_rate": 0.5},
        "modes": [{"name": "<script>alert(1)</script>", "frequency": 1.0, "count": 10,
                   "budget_samples": 100, "collision_sites": 2, "semantic_matches": []}],
    }]
    md = report_markdown(res)
    page = report_html(res, [("a plot", png_data_uri(Image.new("RGB", (4, 4))))], md)
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    srcs = re.findall(r"src='([^']*)'", page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<h1>Closed loop: custom" in page and "<th>policy</th>" in page
    assert "<td>15.0%, 45.0%</td>" in page  # a replicate row of report.md, as a table cell


@pytest.fixture
def ablation_dir(tmp_path):
    """3 replicates of semantic, collision, shuffled and uniform on the same 20 episodes."""
    _write_eval(tmp_path, "base", set(range(10)))
    fails = {"targeted_semantic": (3, 4, 5), "targeted_collision": (6, 5, 7),
             "targeted_shuffled": (6, 7, 8), "uniform": (8, 8, 9)}
    for arm, ks in fails.items():
        for rep, k in enumerate(ks):
            _write_eval(tmp_path, arm if rep == 0 else f"{arm}@r{rep}", set(range(k)))
    return tmp_path


def test_ablation_compares_semantic_with_collision_and_shuffled(ablation_dir):
    arms = ["targeted_semantic", "targeted_collision", "targeted_shuffled", "uniform"]
    res = collect_results(LoopConfig(arms=arms, replicates=3), ablation_dir)
    abl = res["ablation"]
    assert set(abl) == {"targeted_semantic vs uniform", "targeted_semantic vs targeted_collision",
                        "targeted_semantic vs targeted_shuffled",
                        "targeted_shuffled vs uniform", "targeted_shuffled vs targeted_collision",
                        "targeted_collision vs uniform"}
    r = abl["targeted_semantic vs targeted_shuffled"]["in_distribution"]
    # per replicate (3-6, 4-7, 5-8)/20 = -0.15 each: sd 0, so the t interval is a point
    assert r["difference"] == pytest.approx(-0.15)
    assert r["verdict"] == "lower" and r["p"] == 0.0 and "3 replicates" in r["method"]
    r = abl["targeted_semantic vs targeted_collision"]["in_distribution"]
    # -3/20, -1/20, -2/20: mean -0.10, sd 0.05, t(0.975, 2) = 4.302653: -0.10 +- 0.12421
    assert r["ci95"] == pytest.approx([-0.10 - 0.124207, -0.10 + 0.124207], abs=1e-5)
    assert r["verdict"] == "not distinguishable"  # the interval spans 0
    md = report_markdown(res)
    assert "## Which arm needed the taxonomy" in md
    assert "matching each mode's text to its own kinds (vs shuffled) helped" in md
    assert "3 replicate(s)" in res["scope"] and "`failtax close-loop full`" not in res["scope"]


def test_one_replicate_says_what_it_cannot_conclude(loop_dir):
    import shutil

    for p in ("uniform@r1", "targeted_semantic@r1"):
        shutil.rmtree(loop_dir / "evals" / p)
    res = collect_results(LoopConfig(arms=["targeted_semantic", "uniform"]), loop_dir)
    assert "cannot rank the arms" in res["scope"] and "failtax close-loop full" in res["scope"]
    assert res["scope"] in report_markdown(res)
    r = res["ablation"]["targeted_semantic vs uniform"]["in_distribution"]
    assert r["method"].startswith("1 replicate")


def test_camera_blind_follower_is_compared_with_base(loop_dir):
    _write_eval(loop_dir, "camera_blind", set(range(4)))  # fails 4 of 20, base 10 of 20
    res = collect_results(LoopConfig(arms=["targeted_semantic", "uniform"], replicates=2),
                          loop_dir)
    assert list(res["policies"])[:2] == ["base", "camera_blind"]
    assert "camera_blind" not in res["relative_reduction"]
    r = res["ablation"]["base vs camera_blind"]["in_distribution"]
    assert r["difference"] == pytest.approx(6 / N) and r["verdict"] == "higher"
    assert "the base policy's camera (vs the camera-blind route follower it corrects) hurt" in \
        report_markdown(res)
    assert "camera_blind" not in res["replicates"]["arms"]
