"""`failtax discover/assign/evaluate/report` command lines."""

from __future__ import annotations

import json

from click.testing import CliRunner

from common import read_jsonl
from failtax.cli import main


def test_help_explains_each_command():
    runner = CliRunner()
    out = runner.invoke(main, ["discover", "--help"])
    assert out.exit_code == 0
    for word in (
        "EPISODES",
        "--run-dir",
        "--config",
        "--set",
        "--base-url",
        "--embedded",
        "resume",
    ):
        assert word in out.output
    for command in ("assign", "evaluate", "report"):
        result = runner.invoke(main, [command, "--help"])
        assert result.exit_code == 0 and "RUN_DIR" in result.output


def test_discover_facts_stages_from_the_command_line(tmp_path, tiny_episodes):
    run_dir = tmp_path / "run"
    args = [
        "discover",
        str(tiny_episodes),
        "--run-dir",
        str(run_dir),
        "--stages",
        "downsample,reason",
        "--set",
        "reasoning.input_mode=facts",
        "--set",
        "scene.class_names=false",
        "--quiet",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[: result.output.rindex("}") + 1])
    assert summary["stages"]["reason"]["total"] == 6
    explanations = read_jsonl(run_dir / "explanations.jsonl")
    assert all("glass" not in e["failure_reason"] for e in explanations)  # geometry only


def test_bad_options_are_usage_errors(tmp_path, tiny_episodes):
    runner = CliRunner()
    base = ["discover", str(tiny_episodes), "--run-dir", str(tmp_path / "r")]
    result = runner.invoke(main, [*base, "--set", "reasoning.input_mode"])
    assert result.exit_code != 0 and "dotted.key=value" in result.output
    result = runner.invoke(main, [*base, "--set", "reasoning.no_such_key=1"])
    assert result.exit_code != 0 and "no_such_key" in result.output
    result = runner.invoke(main, [*base, "--base-url", "http://x/v1", "--embedded"])
    assert result.exit_code != 0 and "not both" in result.output
    result = runner.invoke(main, ["assign", str(tmp_path)])
    assert result.exit_code != 0 and "config.yaml" in result.output


def test_discover_then_evaluate_without_a_model(tmp_path, tiny_episodes):
    run_dir = tmp_path / "run"
    hashing = [
        "--set",
        "discovery.embedding.kind=hashing",
        "--set",
        "assignment.embedding.kind=hashing",
    ]
    args = [
        "discover",
        str(tiny_episodes),
        "--run-dir",
        str(run_dir),
        "--quiet",
        "--stages",
        "downsample,reason,discover,assign",
        "--set",
        "discovery.use_model_names=false",
        "--set",
        "discovery.min_modes=2",
        *hashing,
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert (run_dir / "taxonomy.json").exists() and len(
        read_jsonl(run_dir / "assignments.jsonl")
    ) == 6
    result = CliRunner().invoke(main, ["evaluate", str(run_dir), "--set", "embedding.kind=hashing"])
    assert result.exit_code == 0, result.output
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert evaluation["labelled_episodes"] == 6 and "nmi" in evaluation["assignment"]


def test_discover_exits_non_zero_when_results_are_fallbacks_from_failed_calls(
    tmp_path, tiny_episodes
):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    args = [
        "discover",
        str(tiny_episodes),
        "--run-dir",
        str(tmp_path / "run"),
        "--quiet",
        "--stages",
        "downsample,reason,discover",
        "--base-url",
        f"http://127.0.0.1:{dead_port}/v1",
        "--model",
        "stub-model",
        "--set",
        "backend.retries=0",
        "--set",
        f"cache_dir={tmp_path / 'cache'}",
        "--set",
        "discovery.embedding.kind=hashing",
        "--set",
        "discovery.num_modes=2",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 3, result.output
    summary = json.loads(result.stdout[: result.stdout.rindex("}") + 1])
    assert summary["fallbacks_from_failed_calls"]["discover"] >= 1
    assert "fallbacks from model calls that failed" in result.stderr
    assert "run the same command again" in result.stderr


def test_embedded_picks_the_model_that_judges_unless_told_tiny():
    from failtax.commands import _load
    from serving.embedded import DEFAULT_LOCAL, EMBEDDED, JUDGE

    assert DEFAULT_LOCAL == JUDGE
    default = _load(None, (), None, None, None)  # no recipe named: the factory serves DEFAULT_LOCAL
    assert default.backend.kind == "embedded" and default.discovery.context_tokens == 8192
    assert _load("default", (), None, None, None).backend.recipe == JUDGE  # the shipped preset says so
    assert _load(None, (), None, "judge", None).backend.recipe == JUDGE
    tiny = _load(None, (), None, "tiny", None)
    assert tiny.backend.kind == "embedded" and tiny.backend.recipe == EMBEDDED
    assert tiny.discovery.context_tokens == 4096  # discovery budgets to the served window
    mine = _load(None, ("discovery.context_tokens=6000",), None, "judge", None)
    assert mine.discovery.context_tokens == 6000  # unless told otherwise
    runner = CliRunner()
    out = runner.invoke(main, ["discover", "x", "--run-dir", "y", "--embedded", "huge"])
    assert out.exit_code != 0 and "judge" in out.output and "tiny" in out.output
