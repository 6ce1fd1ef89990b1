"""Atomic file writes: a reader never sees a half-written file or folder."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same folder and
    `os.replace`, so the file is either the old one or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; results are shared in a lab, so use the usual 0644.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> Path:
    """JSON with sorted keys (stable diffs, stable hashes), written atomically."""
    text = json.dumps(obj, sort_keys=True, indent=indent, ensure_ascii=False, default=_json_default)
    return atomic_write_text(path, text + "\n")


def append_jsonl(path: str | os.PathLike, records: Iterable[dict] | dict) -> None:
    """Append records as whole lines and fsync.

    A writer killed mid-append leaves a torn last line; it is cut first
    (`repair_torn_tail`), so the new lines never land after a broken one.
    """
    if isinstance(records, dict):
        records = [records]
    lines = "".join(
        json.dumps(r, sort_keys=True, ensure_ascii=False, default=_json_default) + "\n" for r in records
    )
    if not lines:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    repair_torn_tail(path)
    with open(path, "a", encoding="utf-8") as f:
        f.write(lines)
        f.flush()
        os.fsync(f.fileno())


def repair_torn_tail(path: str | os.PathLike) -> int:
    """Cut a torn last line (a writer killed mid-append) off a JSONL file.

    The bytes after the last newline are the tail: a complete record that only
    lacks its newline gets one; anything else is cut. Returns the bytes cut.
    """
    path = Path(path)
    try:
        f = open(path, "r+b")  # noqa: SIM115 - closed below; missing file is the common case
    except FileNotFoundError:
        return 0
    with f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        # torn: find the last newline (tails are one line, so read backwards in blocks)
        start = size
        while start > 0:
            block = min(start, 1 << 16)
            f.seek(start - block)
            chunk = f.read(block)
            cut = chunk.rfind(b"\n")
            start -= block
            if cut >= 0:
                start += cut + 1
                break
        f.seek(start)
        tail = f.read()
        if _complete_record(tail):
            f.seek(0, os.SEEK_END)
            f.write(b"\n")
            f.flush()
            os.fsync(f.fileno())
            return 0
        f.truncate(start)
        f.flush()
        os.fsync(f.fileno())
    log.warning("%s: cut a torn last line (%d bytes) left by an interrupted writer", path, len(tail))
    return len(tail)


def read_jsonl(path: str | os.PathLike, *, missing_ok: bool = True) -> list[dict]:
    """Read a JSONL file; a torn last line (from a killed writer) is skipped with a
    warning (the next `append_jsonl` cuts it). A broken line elsewhere is an error."""
    path = Path(path)
    if not path.exists():
        if missing_ok:
            return []
        raise FileNotFoundError(path)
    out: list[dict] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == last:  # torn tail from an interrupted append
                log.warning(
                    "%s:%d: skipping a torn last line (%d bytes) left by an interrupted writer",
                    path,
                    i + 1,
                    len(line.encode()),
                )
                break
            raise ValueError(f"{path}:{i + 1}: not valid JSON; fix or delete that line") from None
    return out


def _complete_record(tail: bytes) -> bool:
    try:
        json.loads(tail.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return True


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder under `<final>.tmp` and rename it to `final` on success.

    On an exception the temporary folder is removed, so `final` only ever
    exists complete.
    """
    final = Path(final)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} exists; pass overwrite=True or remove it")
    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def _json_default(o: Any) -> Any:
    # numpy scalars/arrays and Paths show up in records; keep the writers simple.
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    if hasattr(o, "model_dump"):
        return o.model_dump(mode="json")
    raise TypeError(f"cannot serialise {type(o).__name__} to JSON")
