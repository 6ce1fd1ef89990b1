"""Run a vLLM OpenAI-compatible server as a managed subprocess, or attach to one.

`launch_server(recipe)` starts `python -m vllm.entrypoints.openai.api_server`
from the server's own virtual environment on a free loopback port, polls
`/health` until a deadline, and fails fast with the tail of the server log if
the process exits first. The server runs in its own process group; stopping
the handle (or leaving its `with` block, Ctrl-C, interpreter exit) terminates
the whole group. `attach_server(url)` wraps a server someone else runs.

Example:
    with launch_server(get_recipe("embedded")) as server:
        backend = OpenAICompatBackend(server.base_url, server.model)
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from serving.embedded import failtax_home
from serving.recipes import Recipe

log = logging.getLogger(__name__)

SERVER_VENV_NAME = "vllm-cpu-venv"
_LOG_TAIL_LINES = 40
_running: set[ServerHandle] = set()  # stopped at interpreter exit
_reserved_ports: set[int] = set()  # handed out in this process, maybe not bound yet
_port_lock = threading.Lock()


class ServerEnvMissing(RuntimeError):
    """No Python with vLLM was found for the server."""


class ServerStartError(RuntimeError):
    """The server process died or missed its deadline while starting."""


@dataclass(eq=False)
class ServerHandle:
    """A running (or attached) OpenAI-compatible server."""

    base_url: str  # endpoint root including /v1
    model: str  # served model name
    process: subprocess.Popen | None = None  # None when attached to someone else's server
    log_path: Path | None = None
    started_s: float = 0.0  # seconds from spawn to healthy (0 when attached)
    command: list[str] = field(default_factory=list)
    root: str | None = None  # the weights an attached server reports (`root` in /v1/models)

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1].split("/")[0])

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        """False when a managed process has exited (an attached server is assumed alive)."""
        return self.process is None or self.process.poll() is None

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        with open(self.log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64_000))
            text = f.read().decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])

    def death_report(self) -> str:
        """What to tell the user when the managed server is gone."""
        code = self.process.poll() if self.process else None
        return (
            f"model server for {self.model!r} at {self.base_url} (pid {self.pid}) "
            f"exited with code {code}; "
            f"last lines of {self.log_path}:\n{self.log_tail()}"
        )

    def stop(self, timeout_s: float = 20.0) -> None:
        """Terminate the server's process group (SIGTERM, then SIGKILL). Idempotent."""
        _running.discard(self)
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=10)
        # the engine core runs in the same group and may outlive the API process briefly
        _signal_group(proc, signal.SIGKILL)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


@atexit.register
def _stop_all() -> None:
    for handle in list(_running):
        handle.stop(timeout_s=5)


def default_server_venv() -> Path:
    return failtax_home() / SERVER_VENV_NAME


def server_env_problem() -> str | None:
    """None when a server Python is available, else a sentence saying why not."""
    try:
        resolve_server_python()
    except ServerEnvMissing as e:
        return str(e)
    return None


def resolve_server_python(explicit: str | None = None) -> str:
    """The Python of the vLLM environment: `explicit`, else $FAILTAX_SERVER_PYTHON,
    else the cached vllm-cpu environment built by scripts/setup_server_env.sh."""
    chosen = explicit or os.environ.get("FAILTAX_SERVER_PYTHON")
    if chosen:
        if not Path(chosen).exists():
            raise ServerEnvMissing(f"server python {chosen} does not exist")
        return chosen
    venv = default_server_venv()
    if (venv / "READY").exists() and (venv / "bin" / "python").exists():
        return str(venv / "bin" / "python")
    why = ""
    if (venv / "FAILED").exists():
        why = f" (the last build failed: {(venv / 'FAILED').read_text().strip()[:400]})"
    raise ServerEnvMissing(
        f"no vLLM server environment: {venv} is not built{why}. Build it with "
        "`bash scripts/setup_server_env.sh`, or point FAILTAX_SERVER_PYTHON at the python "
        "of an environment where vLLM is installed"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now and this process has not handed out before."""
    with _port_lock:
        for _ in range(50):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
            if port not in _reserved_ports:
                _reserved_ports.add(port)
                return port
    raise RuntimeError("could not find a free port")


def server_command(
    recipe: Recipe,
    python: str,
    host: str,
    port: int,
    extra_args: list[str] | None = None,
    *,
    model_path: Path | None = None,
) -> list[str]:
    """The server's command line; `model_path` None: the recipe's checked weights folder."""
    model_path = model_path or recipe.require_model_dir()
    return [
        python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        *recipe.vllm_args(model_path),
        "--host",
        host,
        "--port",
        str(port),
        *(extra_args or []),
    ]


def launch_server(
    recipe: Recipe,
    *,
    python: str | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    start_timeout_s: float = 600.0,
    log_dir: str | os.PathLike | None = None,
    extra_args: list[str] | None = None,
    quiet: bool = True,
) -> ServerHandle:
    """Start a vLLM server for `recipe` and wait until it answers `/health`.

    Args:
        recipe: what to serve (its weights folder must exist).
        python: server Python (default: `resolve_server_python()`).
        host: bind address; loopback unless you mean to expose the server.
        port: fixed port; None picks a free one.
        start_timeout_s: deadline for `/health`.
        log_dir: where the server log goes (default: a temporary folder).
        extra_args: more vLLM flags.
        quiet: False to also mirror the log to stderr (for `failtax serve`).

    Raises:
        ServerEnvMissing: no server Python.
        FileNotFoundError: the recipe's weights folder is missing (says how to fix).
        ServerStartError: the process died or missed the deadline (with the log tail).
    """
    for attempt in range(3):
        try:
            return _launch_once(
                recipe,
                python=python,
                host=host,
                port=port,
                start_timeout_s=start_timeout_s,
                log_dir=log_dir,
                extra_args=extra_args,
                quiet=quiet,
            )
        except ServerStartError as e:
            # another program took the free port between our check and vLLM's bind
            if port is not None or attempt == 2 or "address already in use" not in str(e).lower():
                raise
            log.warning("port taken while the server started; retrying on another port")
    raise AssertionError("unreachable")


def _launch_once(
    recipe: Recipe, *, python, host, port, start_timeout_s, log_dir, extra_args, quiet
) -> ServerHandle:
    python = resolve_server_python(python)
    chosen_port = port or free_port(host)
    cmd = server_command(recipe, python, host, chosen_port, extra_args)
    log_root = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="failtax-server-"))
    log_root.mkdir(parents=True, exist_ok=True)
    log_path = log_root / f"vllm-{recipe.name}-{chosen_port}.log"
    env = {**os.environ, **recipe.env, "PYTHONUNBUFFERED": "1"}
    # the main environment's variables must not leak into the server's interpreter
    for var in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
        env.pop(var, None)
    log.info("starting %s on %s:%d (log: %s)", recipe.name, host, chosen_port, log_path)
    log_file = open(log_path, "wb")  # noqa: SIM115 - owned by the child for its lifetime
    try:
        proc = subprocess.Popen(
            cmd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=log_root,
            preexec_fn=_child_setup(),
            close_fds=True,  # noqa: PLW1509 - setsid + prctl only
        )
    finally:
        log_file.close()
    connect_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    handle = ServerHandle(
        base_url=f"http://{connect_host}:{chosen_port}/v1",
        model=recipe.served_name or recipe.name,
        process=proc,
        log_path=log_path,
        command=cmd,
    )
    _running.add(handle)
    spawned = time.monotonic()
    mirror = None if quiet else _Mirror(log_path)
    try:
        _wait_healthy(handle, start_timeout_s)
    except BaseException:
        handle.stop(timeout_s=5)
        raise
    finally:
        if mirror is not None:
            mirror.stop()
    handle.started_s = time.monotonic() - spawned
    log.info("%s ready at %s after %.1fs", recipe.name, handle.base_url, handle.started_s)
    return handle


def _child_setup():
    launched_from_main = threading.current_thread() is threading.main_thread()

    def setup() -> None:
        os.setsid()  # own process group: teardown reaches the engine workers too
        if launched_from_main and sys.platform.startswith("linux"):
            # die with the parent even if it is SIGKILLed (no orphaned 4 GiB servers). Only
            # when launched from the main thread: the signal fires when the forking thread ends.
            with contextlib.suppress(Exception):
                ctypes.CDLL("libc.so.6", use_errno=True).prctl(
                    1, signal.SIGTERM
                )  # PR_SET_PDEATHSIG

    return setup


def _wait_healthy(handle: ServerHandle, timeout_s: float) -> None:
    health = handle.base_url[: -len("/v1")] + "/health"
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=5.0) as client:
        while True:
            if not handle.alive():
                raise ServerStartError(
                    f"the server exited while starting.\n{handle.death_report()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if client.get(health).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"the server at {handle.base_url} was not healthy after {timeout_s:.0f}s; "
                    f"last lines of {handle.log_path}:\n{handle.log_tail()}"
                )
            time.sleep(0.5)


def attach_server(
    base_url: str, *, model: str | None = None, api_key: str | None = None, timeout_s: float = 10.0
) -> ServerHandle:
    """Wrap a server that is already running; checks that it answers.

    Args:
        base_url: endpoint root, with or without the trailing `/v1`.
        model: served model name; None takes the first one `/v1/models` lists.
        api_key: bearer key for servers that need one.
        timeout_s: how long to wait for the first answer.
    """
    base = base_url.rstrip("/")
    if not base.endswith("/v1"):
        base += "/v1"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    deadline = time.monotonic() + timeout_s
    last = ""
    while True:
        try:
            r = httpx.get(base + "/models", headers=headers, timeout=5.0)
            if r.status_code == 200:
                entries = r.json().get("data", [])
                ids = [m["id"] for m in entries]
                if model is not None and ids and model not in ids:
                    raise ValueError(f"{base} serves {ids}, not {model!r}")
                if model is None and not ids:
                    raise ValueError(f"{base}/models lists no model; pass the model name")
                chosen = model or ids[0]
                root = next((m.get("root") for m in entries if m["id"] == chosen), None)
                return ServerHandle(base_url=base, model=chosen, root=root)
            last = f"HTTP {r.status_code}: {r.text[:200]}"
        except httpx.HTTPError as e:
            last = f"{type(e).__name__}: {e}"
        if time.monotonic() > deadline:
            raise ConnectionError(f"no OpenAI-compatible server answers at {base} ({last})")
        time.sleep(0.5)


class _Mirror:
    """Copies a growing log file to stderr while the server starts (for the CLI)."""

    def __init__(self, path: Path) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(path,), daemon=True)
        self._thread.start()

    def _run(self, path: Path) -> None:
        while not path.exists() and not self._stop.is_set():
            time.sleep(0.1)
        with open(path, "rb") as f:
            while not self._stop.is_set():
                chunk = f.read()
                if chunk:
                    sys.stderr.write(chunk.decode("utf-8", "replace"))
                    sys.stderr.flush()
                else:
                    time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
