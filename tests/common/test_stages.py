"""common/stages.py: the one resume mechanism of the pipeline and the closed loop."""

from __future__ import annotations

from common import read_jsonl
from common.stages import StageLog, StageOutcome, StageRunner, stage_seconds


def test_a_stage_with_failed_calls_is_redone_until_nothing_is_left_to_retry(tmp_path):
    runner = StageRunner(tmp_path)
    out = tmp_path / "x.txt"
    left = [2, 0]

    def work() -> StageOutcome:
        out.write_text("x")
        return StageOutcome(retryable=left.pop(0))

    runner.run("discover", {"k": 1}, [out], work)
    assert runner.last_finish("discover")["retryable"] == 2
    runner.run("discover", {"k": 1}, [out], work)  # same inputs, but calls to retry
    assert "retryable" not in runner.last_finish("discover")
    runner.run("discover", {"k": 1}, [out], work)  # now done
    assert runner.ran == ["discover", "discover"] and runner.skipped == ["discover"]
    assert [r["event"] for r in read_jsonl(tmp_path / "stages.jsonl")] == [
        "start",
        "finish",
        "start",
        "finish",
        "skip",
    ]
    assert set(stage_seconds(tmp_path)) == {"discover"}


def test_other_return_values_of_a_stage_are_not_logged(tmp_path):
    runner = StageRunner(tmp_path)
    out = tmp_path / "x.txt"
    runner.run("collect", {"k": 1}, [out], lambda: out.write_text("x") and {"manifest": 1})
    assert "manifest" not in runner.last_finish("collect")


def test_stage_log_is_done_needs_outputs_same_hash_and_nothing_to_retry(tmp_path):
    log = StageLog(tmp_path)
    out = tmp_path / "taxonomy.json"
    log.append("discover", "finish", input_hash="a")
    assert not log.is_done("discover", "a", [out])  # no output yet
    out.write_text("{}")
    assert log.is_done("discover", "a", [out]) and not log.is_done("discover", "b", [out])
    log.append("discover", "finish", input_hash="a", retryable=3)
    assert not log.is_done("discover", "a", [out])
