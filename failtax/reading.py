"""A model reads failure reports written by people and says what was hit or went wrong.

Incident reports from several writers (operators, fleets, sites) each carry their writer's
template, vocabulary and boilerplate; clustered as written, they group by who wrote them.
Under `reasoning.reports: extract` (the default with any model but the tiny embedded one),
the model reads each report and answers one short field, `object`: the thing hit or the
situation that went wrong, by the most common name for what it is ("seating furniture" for
"the object had four legs and a backrest"). That answer becomes the explanation's
`failure_reason`, the text discovery clusters and the naming model reads: the model decides
the evidence the modes are built from, in one voice for every writer. The writers are still
found in the reports themselves (failtax/discovery/writers.py), and discovery standardises
the model's answers per writer.

Every explanation written here has input_mode "report", the model's id, and the report it
read (`Explanation.report`). A call that fails keeps the report as written
(`fallback:<why>` in `degenerate`, the error in errors.jsonl); a rerun retries the ones
whose server was unreachable. Answers are appended as they come, so a killed run
resumes where it stopped.

Measured on the multi-operator corpus with Qwen2.5-Coder-1.5B: docs/JUDGEMENT.md.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import ValidationError

from common import append_jsonl
from failtax.answers import answer_schema, report_answer
from failtax.config import ReasoningConfig
from failtax.run_folder import EXPLANATIONS_FILE, RunFolder, backend_stats
from failtax.types import Explanation
from serving.config import BackendConfig
from serving.embedded import EMBEDDED
from serving.protocol import BackendError, LLMBackend
from serving.structured import schema_token_budget

OBJECT_MAX_CHARS = 40  # "1 to 4 words"
REPORT_MAX_CHARS = 3000  # longer reports are cut (the small model's context)


def reads_reports(cfg: ReasoningConfig, backend: BackendConfig) -> bool:
    """Whether the model reads CSV/JSONL reports (`reasoning.reports`; under "auto", every
    model but the tiny embedded one, which serves mechanics tests and was not measured as a
    reader)."""
    if cfg.reports != "auto":
        return cfg.reports == "extract"
    return backend.recipe != EMBEDDED


def report_text(given: Explanation) -> str:
    """The report as its writer gave it: the trajectory column (if any), then the reason."""
    return f"{given.trajectory}\n{given.failure_reason}".strip()[:REPORT_MAX_CHARS]


class ReportReader:
    """Asks the model what each report says was hit or went wrong."""

    def __init__(self, prompt: str, backend: LLMBackend, *, temperature: float = 0.0, seed: int = 0) -> None:
        if "{report}" not in prompt:
            raise ValueError("the report prompt (reasoning.report_prompt) has no {report} placeholder")
        self.backend = backend
        self.prompt = prompt
        self.answer = report_answer(object_max_chars=OBJECT_MAX_CHARS)
        self.schema = answer_schema(self.answer)
        self.max_tokens = schema_token_budget(self.schema)
        self.temperature = temperature
        self.seed = seed

    async def read(self, given: Explanation) -> tuple[Explanation, dict[str, Any] | None]:
        """The model's explanation of `given`, or `given` flagged as a fallback with the error."""
        messages = [{"role": "user", "content": self.prompt.replace("{report}", report_text(given))}]
        try:
            result = await self.backend.complete_json(
                messages, self.schema, max_tokens=self.max_tokens, temperature=self.temperature, seed=self.seed
            )
        except BackendError as e:
            return self._fallback(given, "backend_error", str(e), [])
        if result.parsed is None:
            why = "truncated" if result.finish_reason == "length" else "parse_failure"
            return self._fallback(given, why, result.error or "no parsed output", [result.call_id])
        try:
            answer = self.answer.model_validate(result.parsed)
        except ValidationError as e:
            return self._fallback(given, "schema_mismatch", str(e)[:300], [result.call_id])
        return Explanation(
            given.episode_id,
            given.trajectory,
            " ".join(answer.object.split()),
            "report",
            result.model or self.backend.model_id,
            [result.call_id],
            writer=given.writer,
            report=report_text(given),
        ), None

    def _fallback(
        self, given: Explanation, kind: str, message: str, call_ids: list[str]
    ) -> tuple[Explanation, dict[str, Any]]:
        out = Explanation.from_dict({**given.to_dict(), "call_ids": call_ids, "degenerate": [f"fallback:{kind}"]})
        record = {
            "stage": "reason",
            "episode_id": given.episode_id,
            "kind": kind,
            "message": f"{message}; kept the report as written",
            "input_mode": "report",
            "model": self.backend.model_id,
            "call_ids": call_ids,
        }
        return out, record


async def read_reports(
    run: RunFolder, pending: list[Explanation], reader: ReportReader, concurrency: int
) -> tuple[int, int]:
    """The model's explanations of `pending`, appended to explanations.jsonl as they come;
    returns (new, fallbacks)."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(given: Explanation) -> tuple[Explanation, dict[str, Any] | None]:
        async with semaphore:
            return await reader.read(given)

    counts = {"new": 0, "fallbacks": 0}

    def keep(result: tuple[Explanation, dict[str, Any] | None]) -> None:
        explanation, error = result
        if error is not None:
            run.record_errors([error])
            counts["fallbacks"] += 1
        append_jsonl(run.path(EXPLANATIONS_FILE), explanation.to_dict())
        counts["new"] += 1

    await run.each_done((one(g) for g in pending), keep, desc="reason (report)", unit="report")
    run.log_stage("reason", "models", **backend_stats(reader.backend))
    return counts["new"], counts["fallbacks"]


__all__ = ["ReportReader", "read_reports", "reads_reports", "report_text"]
