"""Runs `failtax discover` without a model (facts, hashing embeddings, keyword names)
over a generated log, for the reader tests."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from common import read_jsonl
from failtax.cli import main

NO_MODEL = (
    "discovery.use_model_names=false",
    "discovery.min_modes=1",
    "discovery.embedding.kind=hashing",
    "assignment.embedding.kind=hashing",
)


def discover(path: Path, run_dir: Path, *sets: str) -> dict[str, list[dict]]:
    """`failtax discover PATH --run-dir RUN_DIR` with every stage and no model; returns the
    run's keyframes, explanations, assignments and errors (the report must exist)."""
    args = ["discover", str(path), "--run-dir", str(run_dir), "--quiet"]
    for s in (*NO_MODEL, *sets):
        args += ["--set", s]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert (run_dir / "report.html").stat().st_size > 0
    assert (run_dir / "taxonomy.json").is_file()
    return {
        name: read_jsonl(run_dir / f"{name}.jsonl")
        for name in ("keyframes", "explanations", "assignments", "errors")
    }


def error_kinds(records: list[dict]) -> dict[str, str]:
    """episode_id -> error kind of a run's errors.jsonl."""
    return {r["episode_id"]: r["kind"] for r in records}
