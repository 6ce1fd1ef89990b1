"""An LLM judge for evaluation: how far a predicted mode matches an expert mode,
and whether an explanation names the expert's cause.

Each call asks the backend for one choice of a fixed list (structured output),
so an answer is parsed once, at the boundary; a failed or unparsed call is
counted, never fatal. Prompts are data: `judge_alignment.txt` and
`judge_explanation.txt` in failtax/prompts/ (or paths to one's own).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections import Counter
from collections.abc import Coroutine
from typing import Any, TypeVar

import numpy as np

from common import derive_rng
from failtax.discovery.common import fill, load_prompt, mode_text
from failtax.types import Mode
from serving.protocol import BackendError, LLMBackend

# judge answer → similarity of a predicted and an expert mode
JUDGE_SCALE = {"none": 0.0, "weak": 0.25, "partial": 0.5, "strong": 0.75, "same": 1.0}

T = TypeVar("T")


async def judge_similarity_matrix(
    modes: list[Mode], experts: dict[str, str], backend: LLMBackend, *, prompt: str, concurrency: int = 8
) -> tuple[np.ndarray, dict[str, int]]:
    """K×M judge scores on the JUDGE_SCALE; failed calls are NaN and counted.

    Args:
        modes: predicted modes (rows).
        experts: expert label → the text that stands for it (columns).
        backend: the judge model.
        prompt: prompt file with `{predicted}` and `{expert}` placeholders.
        concurrency: calls in flight at once.
    """
    template = load_prompt(prompt)
    limiter = asyncio.Semaphore(concurrency)
    sim = np.full((len(modes), len(experts)), np.nan)
    counts: Counter = Counter()
    choices = list(JUDGE_SCALE)

    async def one(i: int, j: int, expert: str) -> None:
        text = fill(template, predicted=mode_text(modes[i]), expert=expert)
        try:
            async with limiter:
                res = await backend.complete_choice([{"role": "user", "content": text}], choices, seed=0)
        except BackendError:
            counts["backend_error"] += 1
            return
        counts["calls"] += 1
        if res.parsed in JUDGE_SCALE:
            sim[i, j] = JUDGE_SCALE[res.parsed]
        else:
            counts["unparsed"] += 1

    await asyncio.gather(*(one(i, j, t) for i in range(len(modes)) for j, t in enumerate(experts.values())))
    return sim, dict(counts)


async def judge_explanations(
    predicted: list[str],
    references: list[str],
    backend: LLMBackend,
    *,
    prompt: str,
    concurrency: int = 8,
    max_explanations: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Share of explanations an LLM judge says name the reference's cause.

    Args:
        predicted, references: explanation / reference pairs, in the same order.
        backend: the judge model.
        prompt: prompt file with `{predicted}` and `{expert}` placeholders, answered yes/no.
        concurrency: calls in flight at once.
        max_explanations: judge at most this many pairs (a seeded sample); 0 judges all.
        seed: seed of that sample.
    """
    template = load_prompt(prompt)
    idx = list(range(len(predicted)))
    if max_explanations and len(idx) > max_explanations:
        idx = sorted(derive_rng(seed, "judge-sample").choice(idx, max_explanations, replace=False))
    limiter = asyncio.Semaphore(concurrency)
    verdicts: list[bool] = []
    counts: Counter = Counter()

    async def one(i: int) -> None:
        text = fill(template, predicted=predicted[i], expert=references[i])
        try:
            async with limiter:
                res = await backend.complete_choice([{"role": "user", "content": text}], ["yes", "no"], seed=0)
        except BackendError:
            counts["backend_error"] += 1
            return
        if res.parsed in ("yes", "no"):
            verdicts.append(res.parsed == "yes")
        else:
            counts["unparsed"] += 1

    await asyncio.gather(*(one(int(i)) for i in idx))
    return {"n": len(verdicts), "llm_judge_agreement": round(float(np.mean(verdicts)), 4) if verdicts else None,
            **{f"judge_{k}": v for k, v in counts.items()}}


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from sync code, also when called inside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
