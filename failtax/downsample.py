"""Key-frame selection around the failure.

`select_change_points` is the paper's bidirectional embedding-space
change-point selection: anchored at the failure frame, walk backward (then
forward) through a window and keep a frame whenever its cosine similarity to
the most recently kept frame in that direction drops below a threshold; merge
both directions chronologically and cap the count. `select_fixed_rate` is the
baseline: evenly spaced frames over the same window.

Frame embedders sit behind the `FrameEmbedder` Protocol (`make_frame_embedder`):

- ``clip``: transformers `CLIPModel` from a local checkpoint folder (CPU-safe,
  no torchvision needed).
- ``open_clip``: open_clip from local weights, for GPU boxes where
  torchvision imports (it cannot on CPU-only torch builds).
- ``descriptor``: no weights at all. A fixed, documented image descriptor on
  the frame resized to 64×64: a 4×4×4 RGB colour histogram (64, square-rooted
  counts), an 8×8 luminance thumbnail with its mean removed (64, the layout),
  and magnitude-weighted 8-bin gradient-orientation histograms over a 4×4 grid
  (128, edges and shapes). The colour block is L2-normalised; the layout and
  edge blocks are divided by (norm + floor), so they weigh as much as colour
  when the image has structure and fade out when it is flat and noisy; the
  whole vector is L2-normalised.
  It notices an obstacle growing in view or a change of scene, not semantics.

`run_stage` is the pipeline's downsample stage (episodes → keyframes.jsonl).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from common import append_jsonl
from failtax.config import DownsampleConfig
from failtax.run_folder import KEYFRAMES_FILE, RunFolder, Skipped, read_keyframes
from failtax.sources import (
    Episode,
    EpisodeReadError,
    EpisodeSource,
    ExplanationSource,
    SourceError,
)
from failtax.types import Keyframes

EMBEDDERS = ("auto", "clip", "open_clip", "descriptor")
DESCRIPTOR_NAME = "descriptor-v1(rgb-hist64+luma8x8+grad-orient4x4x8)"


@runtime_checkable
class FrameEmbedder(Protocol):
    """Maps RGB frames to L2-normalised embedding rows."""

    name: str  # recorded in keyframes.jsonl
    method: str  # "clip" or "fallback-descriptor"

    def embed(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """(N, H, W, 3) uint8 frames → (N, D) float32 rows of unit norm."""
        ...


def _l2(x: np.ndarray, axis: int = -1) -> np.ndarray:
    n = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(n, 1e-12)


def _soft_l2(x: np.ndarray, floor: float) -> np.ndarray:
    return x / (np.linalg.norm(x) + floor)


class DescriptorEmbedder:
    """The no-weights fallback descriptor (see the module docstring)."""

    name = DESCRIPTOR_NAME
    method = "fallback-descriptor"

    def embed(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        return (
            np.stack([self._one(f) for f in frames]).astype(np.float32)
            if frames
            else np.zeros((0, 256), np.float32)
        )

    @staticmethod
    def _one(frame: np.ndarray) -> np.ndarray:
        from PIL import Image

        rgb = np.asarray(
            Image.fromarray(frame).convert("RGB").resize((64, 64), Image.BILINEAR), np.float32
        )
        # Colour: 4 levels per channel, joint histogram, square root to damp large flat areas.
        q = np.clip((rgb / 64.0).astype(int), 0, 3)
        codes = q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]
        hist = np.sqrt(np.bincount(codes.ravel(), minlength=64).astype(np.float32))
        # Layout: 8x8 luminance thumbnail, mean removed so brightness shifts do not dominate.
        luma = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
        thumb = luma.reshape(8, 8, 8, 8).mean(axis=(1, 3)).ravel()
        thumb = thumb - thumb.mean()
        # Edges: gradient orientation histograms (8 bins) on a 4x4 grid, magnitude-weighted.
        gy, gx = np.gradient(luma)
        mag = np.hypot(gx, gy)
        ang = np.mod(np.arctan2(gy, gx), np.pi)  # unsigned orientation
        bins = np.minimum((ang / np.pi * 8).astype(int), 7)
        cell = np.arange(64) // 16
        cell_id = cell[:, None] * 4 + cell[None, :]
        grad = np.zeros((16, 8), np.float32)
        np.add.at(grad, (cell_id.ravel(), bins.ravel()), mag.ravel())
        # Layout and edge blocks are scaled by norm / (norm + floor), so a flat, noisy image
        # does not blow sensor noise up to full weight; the floors are a 4-grey-level layout
        # contrast and a mean gradient of 4 grey levels per pixel spread over all bins.
        grad = grad.ravel()
        blocks = [
            _l2(hist),
            _soft_l2(thumb, 4.0 * 8),
            _soft_l2(grad, 4.0 * 64 * 64 / np.sqrt(grad.size)),
        ]
        return _l2(np.concatenate(blocks))


class ClipEmbedder:
    """transformers `CLIPModel` image tower from a local checkpoint folder."""

    method = "clip"

    def __init__(self, checkpoint_path: str, batch_size: int = 16) -> None:
        import torch
        from transformers import AutoImageProcessor, CLIPImageProcessor, CLIPModel

        self._torch = torch
        self.model = CLIPModel.from_pretrained(checkpoint_path).eval()
        try:
            self.processor = AutoImageProcessor.from_pretrained(checkpoint_path)
        except (OSError, ValueError):
            # A checkpoint saved without its preprocessor config: use CLIP's standard
            # preprocessing at the model's input size.
            size = self.model.config.vision_config.image_size
            self.processor = CLIPImageProcessor(
                size={"shortest_edge": size}, crop_size={"height": size, "width": size}
            )
        self.batch_size = batch_size
        self.name = f"clip:{checkpoint_path}"

    def embed(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        from PIL import Image

        rows: list[np.ndarray] = []
        for start in range(0, len(frames), self.batch_size):
            batch = [Image.fromarray(f) for f in frames[start : start + self.batch_size]]
            inputs = self.processor(images=batch, return_tensors="pt")
            with self._torch.no_grad():
                out = self.model.get_image_features(pixel_values=inputs["pixel_values"])
            # transformers 5 returns an output object; older versions a tensor.
            feats = out if isinstance(out, self._torch.Tensor) else out.pooler_output
            rows.append(feats.float().cpu().numpy())
        if not rows:
            return np.zeros((0, self.model.config.projection_dim), np.float32)
        return _l2(np.concatenate(rows)).astype(np.float32)


class OpenClipEmbedder:
    """open_clip from local weights (needs a working torchvision)."""

    method = "clip"

    def __init__(self, model_name: str, weights_path: str, batch_size: int = 16) -> None:
        try:
            import open_clip
        except Exception as e:
            raise RuntimeError(
                f"open_clip cannot be imported ({e}); install open_clip_torch with a torchvision that "
                "matches your torch, or set downsample.embedder: clip with a transformers checkpoint"
            ) from e
        import torch

        self._torch = torch
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=weights_path
        )
        self.model.eval()
        self.batch_size = batch_size
        self.name = f"open_clip:{model_name}:{weights_path}"

    def embed(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        from PIL import Image

        rows = []
        for start in range(0, len(frames), self.batch_size):
            batch = self._torch.stack(
                [
                    self.preprocess(Image.fromarray(f))
                    for f in frames[start : start + self.batch_size]
                ]
            )
            with self._torch.no_grad():
                rows.append(self.model.encode_image(batch).float().cpu().numpy())
        return (
            _l2(np.concatenate(rows)).astype(np.float32) if rows else np.zeros((0, 1), np.float32)
        )


def make_frame_embedder(cfg: DownsampleConfig) -> FrameEmbedder:
    """The embedder named by `cfg.embedder`; "auto" = clip when a checkpoint is set, else descriptor.

    Raises:
        ValueError: unknown name (lists the valid ones) or a clip embedder without a checkpoint.
    """
    name = cfg.embedder
    if name not in EMBEDDERS:
        raise ValueError(f"unknown frame embedder {name!r}; valid: {', '.join(EMBEDDERS)}")
    if name == "auto":
        name = "clip" if cfg.clip_checkpoint_path else "descriptor"
    if name == "descriptor":
        return DescriptorEmbedder()
    if name == "clip":
        if not cfg.clip_checkpoint_path:
            raise ValueError(
                "downsample.embedder=clip needs downsample.clip_checkpoint_path (a local CLIP folder)"
            )
        return ClipEmbedder(cfg.clip_checkpoint_path, cfg.batch_size)
    if not cfg.open_clip_weights_path:
        raise ValueError(
            "downsample.embedder=open_clip needs downsample.open_clip_weights_path (local weights)"
        )
    return OpenClipEmbedder(cfg.open_clip_model, cfg.open_clip_weights_path, cfg.batch_size)


def window_bounds(num_frames: int, failure_index: int, before: int, after: int) -> tuple[int, int]:
    """Inclusive [lo, hi] frame range of the window around the failure."""
    return max(0, failure_index - before), min(num_frames - 1, failure_index + after)


def select_change_points(
    embeddings: np.ndarray, failure_index: int, lo: int, threshold: float, max_frames: int
) -> list[int]:
    """Bidirectional change-point selection (the paper's downsampling).

    Args:
        embeddings: (W, D) unit rows for frames lo..lo+W-1 of the window.
        failure_index: the failure frame (absolute index, inside the window).
        lo: absolute index of the window's first frame.
        threshold: keep a frame when cos(frame, last kept frame) < threshold.
        max_frames: cap on the result, failure frame included. When more frames
            qualify, the ones nearest the failure in selection order win,
            alternating backward and forward so both the build-up and the
            aftermath stay represented.

    Returns:
        Absolute frame indices, ascending, always containing `failure_index`.
    """
    hi = lo + len(embeddings) - 1
    f = failure_index - lo

    def walk(indices: range) -> list[int]:
        kept, ref = [], embeddings[f]
        for j in indices:
            if float(embeddings[j] @ ref) < threshold:
                kept.append(j + lo)
                ref = embeddings[j]
        return kept

    backward = walk(range(f - 1, -1, -1))
    forward = walk(range(f + 1, hi - lo + 1))
    chosen = [failure_index]
    order = [x for pair in _interleave(backward, forward) for x in pair]
    for idx in order:
        if len(chosen) >= max_frames:
            break
        chosen.append(idx)
    return sorted(chosen)


def _interleave(a: list[int], b: list[int]) -> list[tuple[int, ...]]:
    out = []
    for i in range(max(len(a), len(b))):
        out.append(tuple(x[i] for x in (a, b) if i < len(x)))
    return out


def select_fixed_rate(
    num_frames: int, failure_index: int, before: int, after: int, max_frames: int
) -> list[int]:
    """Baseline: `max_frames` evenly spaced frames over the window, failure frame included."""
    lo, hi = window_bounds(num_frames, failure_index, before, after)
    span = np.linspace(lo, hi, num=min(max_frames, hi - lo + 1))
    chosen = {round(float(x)) for x in span}
    if failure_index not in chosen:
        # Replace the frame nearest the failure so the cap holds.
        nearest = min(chosen, key=lambda x: abs(x - failure_index))
        chosen.discard(nearest)
        chosen.add(failure_index)
    return sorted(chosen)


def pad_frames(indices: list[int], lo: int, failure_index: int, min_frames: int) -> list[int]:
    """Add evenly spaced frames from [lo, failure_index) until there are `min_frames`.

    A trajectory whose frames barely change (a small obstacle on a plain
    background) would otherwise keep only the failure frame and lose all motion.
    """
    chosen = set(indices)
    candidates = [round(float(x)) for x in np.linspace(lo, failure_index, num=min_frames + 1)]
    for c in sorted(candidates, key=lambda x: -x):
        if len(chosen) >= min_frames:
            break
        chosen.add(c)
    # linspace may repeat indices on short windows; fill from the nearest earlier frames.
    k = failure_index - 1
    while len(chosen) < min_frames and k >= lo:
        chosen.add(k)
        k -= 1
    return sorted(chosen)


class Downsampler:
    """Keyframes for one episode at a time (the `downsample` stage)."""

    def __init__(self, cfg: DownsampleConfig, embedder: FrameEmbedder | None = None) -> None:
        self.cfg = cfg
        if cfg.method == "change_point":
            self.embedder = embedder if embedder is not None else make_frame_embedder(cfg)
        else:
            self.embedder = None

    def keyframes(self, episode: Episode) -> Keyframes:
        """Select the kept frames of `episode`.

        Raises:
            failtax.sources.EpisodeReadError: a frame in the window is unreadable.
        """
        cfg = self.cfg
        n, f = episode.num_frames, episode.failure_index
        if self.embedder is None:
            idx = select_fixed_rate(
                n, f, cfg.window_before_frames, cfg.window_after_frames, cfg.max_frames
            )
            return Keyframes(episode.episode_id, idx, f, "fixed-rate", None, None)
        lo, hi = window_bounds(n, f, cfg.window_before_frames, cfg.window_after_frames)
        frames = [episode.load_frame(i) for i in range(lo, hi + 1)]
        emb = self.embedder.embed(frames)
        idx = select_change_points(emb, f, lo, cfg.similarity_threshold, cfg.max_frames)
        if len(idx) < cfg.min_frames:
            idx = pad_frames(idx, lo, f, cfg.min_frames)
        return Keyframes(
            episode.episode_id,
            idx,
            f,
            self.embedder.method,
            cfg.similarity_threshold,
            self.embedder.name,
        )


@dataclass
class DownsampleResult:
    """What the downsample stage did (the run summary's `stages.downsample`)."""

    new: int  # episodes selected in this run
    skipped: int  # episodes whose frames could not be read
    total: int  # episodes in keyframes.jsonl
    retryable: int = 0  # no model calls: nothing to retry

    def summary(self) -> dict[str, Any]:
        return {"new": self.new, "skipped": self.skipped, "total": self.total}


def run_stage(
    run: RunFolder,
    source: EpisodeSource | ExplanationSource,
    cfg: DownsampleConfig,
    *,
    max_episodes: int = 0,
) -> DownsampleResult | Skipped:
    """The downsample stage: kept frames per episode → keyframes.jsonl.

    Resumes: episodes already in keyframes.jsonl are not redone. Unreadable
    inputs become records in errors.jsonl and the scan goes on.

    Args:
        run: the run folder.
        source: where the episodes come from (a source of explanations has no frames).
        cfg: the stage's config.
        max_episodes: stop after this many episodes (0 = all).
    """
    if source.kind == "explanations":
        reason = "source gives explanations; no frames"
        run.log_stage("downsample", "skip", reason=reason)
        return Skipped(reason)
    done = set(read_keyframes(run.dir))
    run.log_stage("downsample", "start", already_done=len(done))
    sampler = Downsampler(cfg)
    new = skipped = seen = 0
    for item in run.bar(source.scan(), desc="downsample", unit="ep"):
        if isinstance(item, SourceError):
            run.record_errors([item.to_record()])
            continue
        seen += 1
        if max_episodes and seen > max_episodes:
            break
        if item.episode_id in done:
            continue
        try:
            kf = sampler.keyframes(item)
        except EpisodeReadError as e:
            run.record_errors(
                [
                    {
                        "stage": "downsample",
                        "episode_id": e.episode_id,
                        "kind": e.kind,
                        "message": e.message,
                        "path": str(item.path),
                    }
                ]
            )
            skipped += 1
            continue
        append_jsonl(run.path(KEYFRAMES_FILE), kf.to_dict())
        new += 1
    result = DownsampleResult(new=new, skipped=skipped, total=len(done) + new)
    run.log_stage(
        "downsample",
        "finish",
        **result.summary(),
        embedder=getattr(sampler.embedder, "name", None) or "fixed-rate",
    )
    return result
