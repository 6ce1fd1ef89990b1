"""The comparison run's control flow with a scripted backend (not a feature demo).

Shared key frames, one resumable sub-run per reasoner, usage read back from
usage.jsonl, a rerun with zero model calls, report-only rebuilds, and the CLI.
The real-model version of this is tests/failtax/test_compare_server.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common import read_jsonl
from failtax.compare.config import CompareConfig, EmbeddingConfig
from failtax.compare.run import REASONERS_DIR, SHARED_DIR, CompareRun
from serving.protocol import CallResult, Usage

REASONS = {  # hazard seen in the prompt -> what the scripted "model" answers
    "glass": "It drove into a transparent glass door it could not see.",
    "pole": "It clipped a thin pole that was only a few pixels wide.",
    "box": "It hit a low box below the camera's view.",
}


def instance(schema: dict, hint: str):
    """A minimal value valid for `schema` (the stub's structured output)."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        return {k: instance(v, hint) for k, v in schema.get("properties", {}).items()}
    if kind == "array":
        return [instance(schema.get("items", {}), hint)] * max(1, schema.get("minItems", 1))
    if kind in ("integer", "number"):
        return schema.get("minimum", 1)
    if kind == "boolean":
        return True
    return hint[: schema.get("maxLength", 200)]


class ScriptedBackend:
    """Answers every JSON request with a schema-valid object and fixed usage."""

    def __init__(self, variant: str) -> None:
        self.model_id = f"scripted-{variant}"
        self.variant = variant
        self.calls = 0

    async def complete_json(self, messages, schema, *, max_tokens, temperature=0.0, seed=0):
        self.calls += 1
        text = json.dumps(messages)
        hazard = next((h for h in REASONS if h in text), "box")
        hint = (
            REASONS[hazard] if self.variant == "a" else f"Collision: the {hazard} was in the way."
        )
        value = instance(schema, hint)
        return CallResult(
            text=json.dumps(value),
            model=self.model_id,
            call_id="",
            usage=Usage(100, 20),
            latency_s=0.01,
            finish_reason="stop",
            parsed=value,
        )

    async def complete(self, messages, *, max_tokens, temperature=0.0, seed=0):
        self.calls += 1
        return CallResult(
            text="ok", model=self.model_id, call_id="", usage=Usage(10, 1), latency_s=0.01
        )

    async def complete_choice(self, messages, choices, *, temperature=0.0, seed=0):
        self.calls += 1
        return CallResult(
            text=choices[0],
            model=self.model_id,
            call_id="",
            usage=Usage(50, 2),
            latency_s=0.01,
            parsed=choices[0],
        )


@pytest.fixture
def reasoners(tmp_path: Path) -> list[Path]:
    out = []
    for name, price in (("a", 0.0), ("b", 1.0)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(f"""
name: {name}
backend: {{kind: openai, base_url: "http://127.0.0.1:9/v1", model: m-{name},
           price_prompt_usd_per_1m_tokens: {price},
           price_completion_usd_per_1m_tokens: {2 * price}}}
reasoning: {{input_mode: scene_text, include_reasoning: false, max_tokens: 200}}
discovery: {{num_modes: 2}}
""")
        out.append(path)
    return out


def make_run(tmp_path, reasoners, episodes, made):
    from failtax.config import load_config
    from serving.cache import CachedBackend

    def factory(backend_cfg):
        inner = ScriptedBackend(backend_cfg.model[-1])
        made.append(inner)
        return CachedBackend(inner, backend_cfg.cache_dir)

    base = load_config(
        None,
        {
            "cache_dir": str(tmp_path / "calls"),
            "reasoning.concurrency": 2,
            "downsample.embedder": "descriptor",
            "discovery.embedding.kind": "hashing",
            "assignment.embedding.kind": "hashing",
        },
    )
    settings = CompareConfig(embedding=EmbeddingConfig(kind="hashing"), least_agreeing_episodes=2)
    return CompareRun(
        base,
        reasoners,
        tmp_path / "cmp",
        episodes=episodes,
        settings=settings,
        backend_factory=factory,
        progress=False,
    )


def test_compare_run_shares_frames_meters_calls_and_reruns_from_the_cache(
    tmp_path, reasoners, tiny_episodes
):
    made: list[ScriptedBackend] = []
    first = make_run(tmp_path, reasoners, tiny_episodes, made).run()
    run_dir = tmp_path / "cmp"
    assert first["shared"]["episodes"] == 6
    shared = (run_dir / SHARED_DIR / "keyframes.jsonl").read_bytes()
    for name in ("a", "b"):
        sub = run_dir / REASONERS_DIR / name
        assert (sub / "keyframes.jsonl").read_bytes() == shared
        assert len(read_jsonl(sub / "explanations.jsonl")) == 6
        assert (sub / "taxonomy.json").is_file() and len(read_jsonl(sub / "assignments.jsonl")) == 6
    by_name = {r["name"]: r for r in first["reasoners"]}
    calls = {m.model_id: m.calls for m in made}
    for name in ("a", "b"):
        c = by_name[name]["cost"]
        # every call the scripted model answered is in the usage, with its tokens
        assert c["calls"] == calls[f"scripted-{name}"] > 6
        assert c["stages"]["reason"]["calls"] == 6
        assert (
            c["stages"]["reason"]["prompt_tokens"] == 600
            and c["stages"]["reason"]["completion_tokens"] == 120
        )
        assert c["parse_failures"] == 0 and c["episodes"] == 6
    assert by_name["a"]["cost"]["usd"] == 0.0
    b = by_name["b"]["cost"]
    assert b["usd"] == pytest.approx(
        (b["prompt_tokens"] * 1.0 + b["completion_tokens"] * 2.0) / 1e6
    )
    assert b["usd_per_1k_episodes"] == pytest.approx(b["usd"] * 1000 / 6)
    assert first["this_invocation"]["model_calls"] == {
        "a": calls["scripted-a"],
        "b": calls["scripted-b"],
    }
    # a and b word the same hazards differently: their explanations differ
    [pair] = first["pairs"]
    assert pair["explanations"]["episodes_compared"] == 6 and pair["explanations"]["mean"] < 0.99
    assert len(pair["explanations"]["least_agreeing"]) == 2
    assert pair["assignments"]["episodes_compared"] == 6

    made.clear()
    second = make_run(tmp_path, reasoners, tiny_episodes, made).run()
    assert second["this_invocation"]["model_calls"] == {"a": 0, "b": 0}
    assert all(m.calls == 0 for m in made)  # no backend was even asked
    assert [r["cost"]["calls"] for r in second["reasoners"]] == [
        r["cost"]["calls"] for r in first["reasoners"]
    ]
    assert second["pairs"] == first["pairs"]


def test_report_only_and_cli_on_an_existing_comparison(
    tmp_path, reasoners, tiny_episodes, monkeypatch
):
    from click.testing import CliRunner

    from failtax.cli import main

    made: list[ScriptedBackend] = []
    make_run(tmp_path, reasoners, tiny_episodes, made).run()
    run_dir = tmp_path / "cmp"
    (run_dir / "comparison.md").unlink()
    args = [
        "compare",
        str(tiny_episodes),
        "--reasoner",
        str(reasoners[0]),
        "--reasoner",
        str(reasoners[1]),
        "--run-dir",
        str(run_dir),
        "--report-only",
        "--quiet",
        "--match-threshold",
        "0.3",
        "--embedder",
        "hashing",
        "--set",
        f"cache_dir={tmp_path / 'calls'}",
        "--set",
        "discovery.embedding.kind=hashing",
        "--set",
        "assignment.embedding.kind=hashing",
        "--set",
        "downsample.embedder=descriptor",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "| a |" in result.output and "| b |" in result.output
    assert (run_dir / "comparison.md").is_file()
    assert (
        json.loads((run_dir / "comparison.json").read_text())["settings"]["match_threshold"] == 0.3
    )

    result = CliRunner().invoke(
        main, args[:6] + ["--run-dir", str(tmp_path / "elsewhere"), "--report-only"]
    )
    assert result.exit_code != 0 and "run without it first" in result.output


def test_compare_refuses_one_reasoner_and_duplicate_names(tmp_path, reasoners, tiny_episodes):
    from failtax.config import load_config

    with pytest.raises(ValueError, match="at least two"):
        CompareRun(load_config(None), reasoners[:1], tmp_path / "x", episodes=tiny_episodes)
    with pytest.raises(ValueError, match="unique"):
        CompareRun(
            load_config(None), [reasoners[0], reasoners[0]], tmp_path / "x", episodes=tiny_episodes
        )
    assert not (tmp_path / "x").exists()


def test_a_reasoner_that_changed_model_is_refused_in_an_existing_folder(
    tmp_path, reasoners, tiny_episodes
):
    from failtax.config import load_config

    CompareRun(
        load_config(None), reasoners, tmp_path / "cmp", episodes=tiny_episodes
    ).write_manifest()
    reasoners[1].write_text(reasoners[1].read_text().replace("model: m-b", "model: m-other"))
    changed = CompareRun(load_config(None), reasoners, tmp_path / "cmp", episodes=tiny_episodes)
    with pytest.raises(ValueError, match="ran with openai:m-b .* now openai:m-other"):
        changed.write_manifest()
    # the server's port may change between sessions: same model, new URL is fine
    reasoners[0].write_text(reasoners[0].read_text().replace("127.0.0.1:9", "127.0.0.1:10"))
    reasoners[1].write_text(reasoners[1].read_text().replace("model: m-other", "model: m-b"))
    CompareRun(
        load_config(None), reasoners, tmp_path / "cmp", episodes=tiny_episodes
    ).write_manifest()
