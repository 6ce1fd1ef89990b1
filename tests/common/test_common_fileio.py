"""JSONL files survive a writer killed mid-append: the torn tail is reported and cut."""

from __future__ import annotations

import json
import logging

import pytest

from common import append_jsonl, read_jsonl


def torn(path, records, tail: bytes) -> None:
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in records) + tail)


@pytest.mark.parametrize("name", ["stages.jsonl", "rollouts.jsonl", "metrics.jsonl"])
def test_append_after_a_torn_last_line_keeps_the_file_readable(tmp_path, name):
    path = tmp_path / name
    torn(path, [{"i": 0}, {"i": 1}], b'{"i": 2, "half')
    append_jsonl(path, {"i": 3})
    append_jsonl(path, [{"i": 4}])
    assert read_jsonl(path) == [{"i": 0}, {"i": 1}, {"i": 3}, {"i": 4}]
    assert path.read_bytes().endswith(b'{"i": 4}\n')


def test_read_reports_a_torn_last_line(tmp_path, caplog):
    path = tmp_path / "stages.jsonl"
    torn(path, [{"i": 0}], b'{"i": 1, "ha')
    with caplog.at_level(logging.WARNING, logger="common.fileio"):
        assert read_jsonl(path) == [{"i": 0}]
    assert "torn last line" in caplog.text


def test_a_complete_record_missing_only_its_newline_is_kept(tmp_path):
    path = tmp_path / "metrics.jsonl"
    torn(path, [{"i": 0}], b'{"i": 1}')
    assert read_jsonl(path) == [{"i": 0}, {"i": 1}]
    append_jsonl(path, {"i": 2})
    assert read_jsonl(path) == [{"i": 0}, {"i": 1}, {"i": 2}]


def test_a_broken_line_in_the_middle_is_an_error(tmp_path):
    path = tmp_path / "rollouts.jsonl"
    path.write_text('{"i": 0}\n{"i": \n{"i": 2}\n')
    with pytest.raises(ValueError, match=r"rollouts.jsonl:2"):
        read_jsonl(path)


def test_torn_file_with_no_complete_line(tmp_path):
    path = tmp_path / "stages.jsonl"
    path.write_bytes(b'{"sta')
    assert read_jsonl(path) == []
    append_jsonl(path, {"i": 0})
    assert read_jsonl(path) == [{"i": 0}]
