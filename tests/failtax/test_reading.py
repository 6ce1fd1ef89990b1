"""The model reads human-written reports (failtax.reading): what it answers, what it keeps,
what a failed call leaves behind, and when the pipeline asks it. Scripted backends test the
control flow; tests/failtax/test_judge_model_server.py runs the real 1.5B model."""

from __future__ import annotations

import asyncio
import json

import pytest

from common import read_jsonl
from failtax.config import ReasoningConfig, load_config
from failtax.pipeline import Run
from failtax.reading import ReportReader, reads_reports
from failtax.reasoning import load_prompt
from failtax.run_folder import read_explanations
from failtax.types import Explanation
from serving.config import BackendConfig
from serving.protocol import BackendError

REPORTS = (
    "episode_id,failure_reason,fleet\n"
    "a,On 2024-01-02 the Northwind AMR struck a glass door at 0.5 m/s. Case NW-1 closed.,northwind\n"
    "b,Our bot ran into a thing with four legs and a backrest.,cobalt\n"
)


def _given(eid: str = "a", text: str = "The Northwind AMR struck a glass door.") -> Explanation:
    return Explanation(eid, "", text, "given", None, writer="northwind")


def _answers(table: dict[str, str]):
    """A responder that answers by the first key found in the prompt."""

    def respond(method, messages, attempt):
        prompt = messages[0]["content"]
        for key, answer in table.items():
            if key in prompt:
                return answer
        raise AssertionError(f"unexpected prompt: {prompt[:200]}")

    return respond


def test_reader_keeps_the_report_and_writes_the_models_answer(stub_backend_factory):
    backend = stub_backend_factory(_answers({"glass door": '{"object": "glass  door"}'}))
    reader = ReportReader(load_prompt("read_report.txt"), backend, seed=3)
    out, error = asyncio.run(reader.read(_given()))
    assert error is None
    assert (out.failure_reason, out.input_mode, out.model) == ("glass door", "report", "stub-model")
    assert out.report == "The Northwind AMR struck a glass door." and out.writer == "northwind"
    assert "The Northwind AMR struck a glass door." in backend.requests[0][1][0]["content"]


@pytest.mark.parametrize(
    ("answer", "kind"),
    [('{"object": "glass door"', "parse_failure"), ('{"object": ""}', "parse_failure")],
)
def test_a_bad_answer_keeps_the_report_as_written(stub_backend_factory, answer, kind):
    reader = ReportReader(load_prompt("read_report.txt"), stub_backend_factory(lambda *a: answer))
    out, error = asyncio.run(reader.read(_given()))
    assert out.failure_reason == "The Northwind AMR struck a glass door." and out.input_mode == "given"
    assert out.degenerate == [f"fallback:{kind}"] and error["kind"] == kind and error["episode_id"] == "a"


def test_a_prompt_without_the_report_placeholder_is_refused(stub_backend_factory):
    with pytest.raises(ValueError, match="no {report} placeholder"):
        ReportReader("Say what was hit.", stub_backend_factory(lambda *a: "{}"))


def test_auto_reads_with_every_model_but_the_tiny_one():
    auto, as_is, extract = (ReasoningConfig(reports=v) for v in ("auto", "as_is", "extract"))
    assert reads_reports(auto, BackendConfig()) and reads_reports(
        auto, BackendConfig(kind="openai", base_url="http://127.0.0.1:1/v1")
    )
    assert not reads_reports(auto, BackendConfig(recipe="embedded"))
    assert not reads_reports(as_is, BackendConfig()) and reads_reports(extract, BackendConfig(recipe="embedded"))


def _run(tmp_path, backend, **overrides):
    cfg = load_config(
        None, {"stages": ["reason"], "source.writer_column": "fleet", "reasoning.concurrency": 2, **overrides}
    )
    return Run(cfg, tmp_path / "run", episodes=tmp_path / "reports.csv", backend=backend, progress=False).run()


def test_pipeline_reads_reports_and_a_rerun_retries_only_the_dead_calls(tmp_path, stub_backend_factory):
    (tmp_path / "reports.csv").write_text(REPORTS)
    dead = {"on": True}

    def respond(method, messages, attempt):
        prompt = messages[0]["content"]
        if "four legs" in prompt and dead["on"]:
            raise BackendError("connection refused")
        return '{"object": "chair"}' if "four legs" in prompt else '{"object": "glass door"}'

    backend = stub_backend_factory(respond)
    summary = _run(tmp_path, backend)
    assert summary["fallbacks_from_failed_calls"] == {"reason": 1}
    got = {e.episode_id: e for e in read_explanations(tmp_path / "run")}
    assert got["a"].input_mode == "report" and got["a"].failure_reason == "glass door"
    assert got["b"].degenerate == ["fallback:backend_error"] and got["b"].writer == "cobalt"
    assert [r["kind"] for r in read_jsonl(tmp_path / "run" / "errors.jsonl")] == ["backend_error"]

    dead["on"] = False
    asked = len(backend.requests)
    _run(tmp_path, backend)
    assert len(backend.requests) == asked + 1  # only the report whose call failed
    got = {e.episode_id: e for e in read_explanations(tmp_path / "run")}
    assert (got["b"].input_mode, got["b"].failure_reason) == ("report", "chair")
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "reports: auto" in config


def test_as_is_keeps_the_texts_and_asks_no_model(tmp_path, stub_backend_factory):
    (tmp_path / "reports.csv").write_text(REPORTS)
    backend = stub_backend_factory(lambda *a: pytest.fail("no model call expected"))
    _run(tmp_path, backend, **{"reasoning.reports": "as_is"})
    rows = [json.loads(line) for line in (tmp_path / "run" / "explanations.jsonl").read_text().splitlines()]
    assert {r["input_mode"] for r in rows} == {"given"} and {r["report"] for r in rows} == {None}
