"""Image parts of chat messages: decode, resize to a recipe's pixel bounds, encode.

Qwen2-VL-family processors work on 28x28 pixel blocks; resizing on the client
to a multiple of 28 within the recipe's bounds keeps the server from doing it
(and keeps request size and visual-token count predictable). Only PIL is used:
torchvision is not available on CPU machines with the CPU torch build.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
from collections.abc import Callable
from typing import Any

from PIL import Image

_FACTOR = 28  # Qwen-VL patch (14) x spatial merge (2)


def to_pil(image: Any) -> Image.Image:
    """PIL image from bytes, a PIL image, a numpy HxWx3 array, or a data: URL."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, str) and image.startswith("data:"):
        image = base64.b64decode(image.split(",", 1)[1])
    if isinstance(image, (bytes, bytearray, memoryview)):
        return Image.open(io.BytesIO(bytes(image))).convert("RGB")
    if hasattr(image, "shape") and hasattr(image, "dtype"):
        return Image.fromarray(image).convert("RGB")
    raise TypeError(
        f"cannot read an image from {type(image).__name__}; pass PNG/JPEG bytes or a PIL image"
    )


def fit_pixels(
    width: int, height: int, min_pixels: int, max_pixels: int, factor: int = _FACTOR
) -> tuple[int, int]:
    """(w, h) rounded to multiples of `factor` with min_pixels <= w*h <= max_pixels,
    keeping the aspect ratio. A bound of 0 means none."""
    w = max(factor, round(width / factor) * factor)
    h = max(factor, round(height / factor) * factor)
    if max_pixels and w * h > max_pixels:
        scale = math.sqrt(width * height / max_pixels)
        w = max(factor, math.floor(width / scale / factor) * factor)
        h = max(factor, math.floor(height / scale / factor) * factor)
    elif min_pixels and w * h < min_pixels:
        scale = math.sqrt(min_pixels / (width * height))
        w = math.ceil(width * scale / factor) * factor
        h = math.ceil(height * scale / factor) * factor
    return w, h


def resize_to_bounds(img: Image.Image, min_pixels: int, max_pixels: int) -> Image.Image:
    """The image resized (bicubic) into the pixel bounds; unchanged when no bound is set."""
    if not (min_pixels or max_pixels):
        return img
    size = fit_pixels(img.width, img.height, min_pixels, max_pixels)
    return img if size == img.size else img.resize(size, Image.BICUBIC)


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def image_digest(image: Any) -> str:
    """Content hash of an image part's payload (bytes hashed raw, PIL as PNG)."""
    if isinstance(image, str):
        data = image.encode()
    elif isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
    else:
        data = png_bytes(to_pil(image))
    return "sha256:" + hashlib.sha256(data).hexdigest()


def data_url(img: Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(img)).decode()


def count_images(messages: list[dict]) -> int:
    return sum(
        1
        for m in messages
        if isinstance(m.get("content"), list)
        for p in m["content"]
        if p.get("type") in ("image", "image_url")
    )


def map_content_parts(messages: list[dict], fn: Callable[[dict], dict]) -> list[dict]:
    """Messages with every part of a list `content` replaced by `fn(part)`.

    String contents and the messages' other keys pass through unchanged.
    """
    out = []
    for m in messages:
        content = m.get("content")
        out.append({**m, "content": [fn(p) for p in content]} if isinstance(content, list)
                   else m)
    return out


def image_url_of(part: dict) -> Any:
    """The URL (or raw payload) of an OpenAI `image_url` part."""
    url = part.get("image_url")
    return url["url"] if isinstance(url, dict) else url


def messages_to_openai(
    messages: list[dict], *, min_pixels: int = 0, max_pixels: int = 0
) -> list[dict]:
    """Messages with every `{"type": "image"}` part encoded as an OpenAI `image_url`
    part (PNG data URL), resized to the pixel bounds. Other parts pass through."""

    def encode(p: dict) -> dict:
        if p.get("type") != "image":
            return p
        img = resize_to_bounds(to_pil(p["image"]), min_pixels, max_pixels)
        return {"type": "image_url", "image_url": {"url": data_url(img)}}

    return map_content_parts(messages, encode)


def messages_digest_form(messages: list[dict]) -> list[dict]:
    """Messages with image payloads replaced by their hashes (for cache keys and logs)."""

    def digest(p: dict) -> dict:
        if p.get("type") == "image":
            return {"type": "image", "image": image_digest(p["image"])}
        if p.get("type") == "image_url":
            return {"type": "image_url", "image_url": image_digest(str(image_url_of(p)))}
        return p

    return map_content_parts(messages, digest)
