"""A tiny closed loop end to end on the embedded model, then a rerun that redoes nothing."""

from __future__ import annotations

import json

import pytest

from common import read_jsonl
from loop.config import LoopConfig
from loop.run import StageRunner, run_loop
from nav_policy.dataset import read_shard

TINY = {
    "nav": {
        "sim": {"overrides": {"episode.time_limit_s": 20.0,
                              "episode.max_start_goal_path_m": 8.0}},
        "collect": {"samples_per_shard": 150, "num_workers": 1, "facing_share": 0.5,
                    "targeted_path_m": [2.0, 6.0], "replay_share": 0.5,
                    "replay_max_steps": 10},
        "train": {"epochs": 1, "batch_size": 64},
        "evaluate": {"num_workers": 1},
    },
    "pipeline": {
        "source": {"kind": "episodes"},
        "downsample": {"embedder": "descriptor", "window_before_frames": 10,
                       "window_after_frames": 1, "max_frames": 3, "min_frames": 2},
        "reasoning": {"input_mode": "facts"},
        "discovery": {"strategy": "cluster-then-name", "min_modes": 2, "max_modes": 3},
    },
    "base": {"budget_samples": 300, "seed": 0},
    "eval": {"in_distribution_rollouts": 3, "ood_rollouts": 2, "mining_rollouts": 6},
    "regions": {"catalogue_buildings": 2, "replay_offsets_s": [0.3, 1.0]},
    "arms": ["targeted_semantic", "uniform"],
    "budget_samples": 200,
    "collection": "dagger",
    "seed": 1,
    "finetune_epochs": 1,
    "preset": "tiny",
}


@pytest.mark.server
def test_tiny_loop_end_to_end_and_rerun(tmp_path, embedded_backend):
    cfg = LoopConfig.model_validate(TINY)
    out = tmp_path / "loop"
    results = run_loop(cfg, out, backend=embedded_backend, progress=False)

    for key in ("policies", "relative_reduction", "causes", "taxonomies", "stage_seconds",
                "seconds_by_kind", "total_seconds", "budget_samples", "arms"):
        assert key in results, key
    assert set(results["policies"]) == {"base", "targeted_semantic", "uniform"}
    # Paired on the same evaluation episodes: the arm against uniform and against base.
    assert set(results["paired"]) == {"targeted_semantic vs uniform", "targeted_semantic vs base",
                                      "uniform vs base"}
    assert results["paired"]["targeted_semantic vs uniform"]["in_distribution"]["episodes"] == 3
    for pol, sets in results["policies"].items():
        assert set(sets) == {"in_distribution", "ood"}, pol
        r = sets["in_distribution"]
        assert r["rollouts"] == 3 and r["ci95"][0] <= r["failure_rate"] <= r["ci95"][1]
    tax = results["taxonomies"][0]
    assert tax["modes"] and sum(m["budget_samples"] for m in tax["modes"]) == 200
    assert json.loads((out / "results.json").read_text())["policies"] == results["policies"]
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "<script src" not in html
    assert (out / "report.md").exists()
    # Both arms collected exactly B new samples with the same seed.
    manifests = [json.loads((out / "cycle0" / a / "data" / "manifest.json").read_text())
                 for a in cfg.arms]
    assert [m["num_samples"] for m in manifests] == [200, 200]
    assert len({m["seed"] for m in manifests}) == 1
    assert manifests[0]["regions_hash"] and manifests[1]["regions_hash"] is None
    # Both arms let the base policy drive part of the time (DAgger) while the expert labels.
    base_ckpt = out / "base" / "policy" / "model.pt"
    assert {m["dagger_checkpoint"] for m in manifests} == {str(base_ckpt)}
    # Targeted episodes either pass near a region or start face-on to it, 0.8-2 m away.
    episodes = [e for f in (out / "cycle0" / "targeted_semantic" / "data" / "shards").glob("*.npz")
                for e in read_shard(f, load_arrays=False).episodes if not e.get("target_miss")]
    assert episodes and all(e["start"] in ("facing", "pass_near", "replay") for e in episodes)
    assert all(0.8 <= e["closest_approach_m"] <= 2.0 for e in episodes if e["start"] == "facing")
    # Collision sites carry replay starts from the failures' own logs; replays are capped.
    regions = json.loads((out / "cycle0" / "base" / "regions_targeted_semantic.json"
                          ).read_text())["regions"]
    assert any(r.get("starts") for r in regions if r["why"] == "collision_site")
    assert all(e["steps"] <= 10 for e in episodes if e["start"] == "replay")
    # Discovery went through the model (names) and never read ground truth (pipeline test):
    # every call was answered and parsed, and each mode's name is the model's or the model's
    # answer was refused for a recorded reason (the 135M model copies its prompt).
    assert embedded_backend.stats.calls > 0 and embedded_backend.stats.errors == 0
    discovered = json.loads((out / "cycle0" / "base" / "discover" / "taxonomy.json").read_text())
    calls = discovered["notes"]["calls"]
    assert calls["calls"] > 0 and calls["completion_tokens"] > 0, calls
    assert not calls["errors"] and not discovered["notes"]["errors"], discovered["notes"]
    refused = sum(n for k, n in calls["degenerate"].items() if k.startswith("name:"))
    named = sum(m["named_by"] == "model" for m in discovered["modes"])
    assert named + refused >= len(discovered["modes"]), (named, refused, discovered["modes"])

    starts_before = [r["stage"] for r in read_jsonl(out / "stages.jsonl")
                     if r["event"] == "start"]
    calls_before = embedded_backend.stats.calls
    run_loop(cfg, out, backend=embedded_backend, progress=False)
    starts_after = [r["stage"] for r in read_jsonl(out / "stages.jsonl")
                    if r["event"] == "start"]
    redone = starts_after[len(starts_before):]
    assert redone == ["report"], redone
    assert embedded_backend.stats.calls == calls_before


def test_stage_runner_skips_refuses_and_reruns(tmp_path):
    runner = StageRunner(tmp_path)
    out = tmp_path / "a" / "x.txt"
    calls = []

    def work(text="1"):
        out.parent.mkdir(exist_ok=True)
        out.write_text(text)
        calls.append(text)

    runner.run("a", {"k": 1}, [out], work)
    runner.run("a", {"k": 1}, [out], work)
    assert calls == ["1"] and runner.skipped == ["a"]
    out.unlink()  # output gone: redo
    runner.run("a", {"k": 1}, [out], work)
    assert calls == ["1", "1"]
    with pytest.raises(ValueError, match="delete"):
        runner.run("a", {"k": 2}, [out], work, on_change="refuse")
    runner.run("a", {"k": 2}, [out], lambda: work("2"))
    assert calls == ["1", "1", "2"]
    out.unlink()
    out.parent.rmdir()  # the refused folder deleted by hand: redone
    runner.run("a", {"k": 3}, [out], lambda: work("3"), on_change="refuse")
    assert calls == ["1", "1", "2", "3"]
    with pytest.raises(RuntimeError, match="without writing"):
        runner.run("b", {}, [tmp_path / "never"], lambda: None)


def test_killed_loop_resumes_without_redoing_finished_stages(tmp_path, monkeypatch):
    """No model server: mode names from keywords. The loop dies in the last arm's
    collection; the rerun does only what had not finished."""
    import nav_policy.collect as collect_module

    cfg = LoopConfig.model_validate({
        **TINY, "pipeline": {**TINY["pipeline"], "discovery": {
            **TINY["pipeline"]["discovery"], "use_model_names": False}},
        "eval": {"in_distribution_rollouts": 2, "ood_rollouts": 0, "mining_rollouts": 6}})
    out = tmp_path / "loop"
    real_collect = collect_module.collect

    def dying_collect(ncfg, out_dir, **kw):
        if "uniform" in str(out_dir):
            raise KeyboardInterrupt("killed")
        return real_collect(ncfg, out_dir, **kw)

    monkeypatch.setattr(collect_module, "collect", dying_collect)
    with pytest.raises(KeyboardInterrupt):
        run_loop(cfg, out, progress=False)
    first = read_jsonl(out / "stages.jsonl")
    finished = {r["stage"] for r in first if r["event"] == "finish"}
    assert "cycle0/targeted_semantic/finetune" in finished
    assert "cycle0/uniform/collect" not in finished

    monkeypatch.setattr(collect_module, "collect", real_collect)
    results = run_loop(cfg, out, progress=False)
    redone = [r["stage"] for r in read_jsonl(out / "stages.jsonl")[len(first):]
              if r["event"] == "start"]
    assert redone == ["cycle0/uniform/collect", "cycle0/uniform/finetune",
                      "evaluate/uniform/in_distribution", "report"], redone
    assert not set(redone) & finished
    assert set(results["policies"]) == {"base", "targeted_semantic", "uniform"}
    # Paired on the same evaluation episodes: the arm against uniform and against base.
    assert set(results["paired"]) == {"targeted_semantic vs uniform", "targeted_semantic vs base",
                                      "uniform vs base"}

    # A second replicate on the finished folder runs only the new replicate's stages, with
    # its own collection seed (shared by its arms) and its own fine-tuning seed.
    cfg2 = cfg.model_copy(update={"replicates": 2})
    before = len(read_jsonl(out / "stages.jsonl"))
    results = run_loop(cfg2, out, progress=False)
    added = [r["stage"] for r in read_jsonl(out / "stages.jsonl")[before:] if r["event"] == "start"]
    assert added == [f"{s}/{a}@r1{t}" for a in cfg.arms for s, t in (
        ("cycle0", "/collect"), ("cycle0", "/finetune"), ("evaluate", "/in_distribution"))
    ] + ["report"], added
    seeds = {d: json.loads((out / "cycle0" / d / "data" / "manifest.json").read_text())["seed"]
             for d in ("uniform", "uniform@r1", "targeted_semantic@r1")}
    assert seeds["uniform@r1"] == seeds["targeted_semantic@r1"] != seeds["uniform"]
    train_seeds = [json.loads((out / "cycle0" / d / "policy" / "train_config.json").read_text())
                   ["config"]["train"]["seed"] for d in ("uniform", "uniform@r1")]
    assert train_seeds == [cfg.nav.train.seed, cfg.nav.train.seed + 1]
    reps = results["replicates"]
    assert reps["count"] == 2
    assert reps["arms"]["uniform"]["in_distribution"]["pooled"]["rollouts"] == 4
    assert len(reps["paired"]["targeted_semantic vs uniform"]["in_distribution"]
               ["differences"]) == 2
    assert "targeted_semantic@r1 vs uniform" in results["paired"]


def test_ablation_and_new_site_arms_run_with_their_own_regions(tmp_path):
    """No model server (mode names from keywords): the shuffled control collects with its
    own regions file; the new-site arms collect in the held-out family, are judged only on
    its set, and compare with each other; a site arm without matches is reported, not run."""
    cfg = LoopConfig.model_validate({
        **TINY, "pipeline": {**TINY["pipeline"], "discovery": {
            **TINY["pipeline"]["discovery"], "use_model_names": False}},
        "eval": {"in_distribution_rollouts": 2, "ood_rollouts": 2, "mining_rollouts": 6},
        "arms": ["targeted_semantic", "targeted_collision", "targeted_shuffled", "uniform",
                 "site_semantic", "site_uniform"]})
    out = tmp_path / "loop"
    results = run_loop(cfg, out, progress=False)
    rdir = out / "cycle0" / "base"
    doc = json.loads((rdir / "regions.json").read_text())
    assert doc["shuffle"]["method"] in ("permutation", "random_kinds", "none")
    assert doc["site"]["family"] == "office_b"
    for arm in ("targeted_semantic", "targeted_collision", "targeted_shuffled"):
        assert (rdir / f"regions_{arm}.json").exists()
        assert set(results["policies"][arm]) == {"in_distribution", "ood"}
    site_file = json.loads((rdir / "regions_site_semantic.json").read_text())
    site_arms = ["site_uniform"] + (["site_semantic"] if site_file["regions"] else [])
    for arm in site_arms:
        assert set(results["policies"][arm]) == {"ood"}, arm
        manifest = json.loads((out / "cycle0" / arm / "data" / "manifest.json").read_text())
        assert manifest["num_samples"] == 200
        fams = {e["family"] for f in (out / "cycle0" / arm / "data" / "shards").glob("*.npz")
                for e in read_shard(f, load_arrays=False).episodes}
        assert fams == {"office_b"}, (arm, fams)
    if site_file["regions"]:
        assert "site_semantic vs site_uniform" in results["ablation"]
        assert all(r["family"] == "office_b" for r in site_file["regions"])
    else:
        assert "site_semantic" not in results["policies"]
        assert results["skipped_arms"]["cycle0/site_semantic"] == site_file["why"]
    assert set(results["ablation"]) >= {"targeted_semantic vs targeted_collision",
                                        "targeted_semantic vs targeted_shuffled",
                                        "targeted_shuffled vs targeted_collision"}
    assert "cannot rank the arms" in results["scope"]
    md = (out / "report.md").read_text()
    assert "## Which arm needed the taxonomy" in md and results["scope"] in md
