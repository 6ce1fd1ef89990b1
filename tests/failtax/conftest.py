"""Shared fixtures for failtax tests: tiny episodes written in the episode format.

`build_episode` writes one episode through `common.episode.write_episode` (the
format's one writer), with a synthetic scene: the robot drives straight at a hazard (a glass door, a thin
pole, a low box or a plain wall) in front of a far wall, and the hazard grows in
view until the collision at the last step. Frames are 32×32 RGB; channels carry
depth, semantic and instance arrays that match the drawing; ground_truth.json
names the hazard. Use the `episode_factory` fixture, or `tiny_episodes` for a
ready folder with two episodes of each of three hazards.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from common import stable_hash
from common.episode import (
    CameraMeta,
    CollisionTruth,
    EpisodeMeta,
    GroundTruth,
    StepRecord,
    frame_name,
    write_episode,
)

SIZE = 32
FOV_DEG = 90.0
CAM_H_M = 0.5
FAR_WALL_M = 6.0
CLASSES = {
    0: "void",
    1: "floor",
    2: "ceiling",
    3: "wall",
    4: "plain_wall",
    6: "glass_door",
    7: "pole",
    10: "box",
}
# hazard → semantic class, width (m), bottom/top height (m), colour, bearing (deg, + left), cause class
HAZARDS = {
    "glass_door": (6, 1.2, 0.0, 2.0, (190, 225, 235), 0.0, "glass"),
    "pole": (7, 0.08, 0.0, 2.0, (70, 70, 80), 4.0, "thin_pole"),
    "box": (10, 0.5, 0.0, 0.3, (170, 110, 50), -3.0, "low_obstacle"),
    "plain_wall": (4, 3.0, 0.0, 2.5, (225, 222, 215), 0.0, "plain_wall"),
}
HAZARD_INSTANCE = 5
WALL_INSTANCE = 1


def render(
    distance_m: float, hazard: str, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """RGB frame and channels with the hazard `distance_m` ahead."""
    cls, width_m, z0, z1, colour, bearing_deg, _ = HAZARDS[hazard]
    focal = (SIZE / 2) / math.tan(math.radians(FOV_DEG) / 2)
    c = SIZE / 2
    rows = np.arange(SIZE) + 0.5
    rgb = np.zeros((SIZE, SIZE, 3), np.float32)
    depth = np.full((SIZE, SIZE), np.inf, np.float32)
    semantic = np.zeros((SIZE, SIZE), np.uint8)
    instance = np.zeros((SIZE, SIZE), np.uint16)
    wall_top = c - focal * (2.5 - CAM_H_M) / FAR_WALL_M
    wall_bottom = c + focal * CAM_H_M / FAR_WALL_M
    for r, y in enumerate(rows):
        if y < wall_top:  # ceiling
            depth[r] = (2.5 - CAM_H_M) * focal / max(c - y, 1e-3)
            semantic[r], rgb[r] = 2, (245, 245, 245)
        elif y > wall_bottom:  # floor
            depth[r] = CAM_H_M * focal / max(y - c, 1e-3)
            semantic[r], rgb[r] = 1, (110 + r, 105 + r, 100 + r)
        else:
            depth[r], semantic[r], instance[r], rgb[r] = (
                FAR_WALL_M,
                3,
                WALL_INSTANCE,
                (200, 190, 175),
            )
    col_c = c - focal * math.tan(math.radians(bearing_deg))
    half = focal * (width_m / 2) / distance_m
    left, right = int(np.floor(col_c - half)), int(np.ceil(col_c + half))
    top = int(np.floor(c - focal * (z1 - CAM_H_M) / distance_m))
    bottom = int(np.ceil(c - focal * (z0 - CAM_H_M) / distance_m))
    sl = (
        slice(max(top, 0), min(bottom, SIZE)),
        slice(max(left, 0), min(max(right, left + 1), SIZE)),
    )
    depth[sl], semantic[sl], instance[sl], rgb[sl] = distance_m, cls, HAZARD_INSTANCE, colour
    rgb = np.clip(rgb + rng.normal(0, 2.0, rgb.shape), 0, 255).astype(np.uint8)
    return rgb, {"depth": depth.astype(np.float16), "semantic": semantic, "instance": instance}


def build_episode(
    root: Path,
    episode_id: str,
    *,
    hazard: str = "pole",
    n_steps: int = 12,
    channels: bool = True,
    ground_truth: bool = True,
    outcome: str = "collision",
    speed_mps: float = 0.5,
    dt_s: float = 0.2,
    seed: int = 0,
) -> Path:
    """Write one episode folder under `root` and return its path."""
    rng = np.random.default_rng(seed)
    start_m = 0.15 + speed_mps * dt_s * (n_steps - 1)
    steps, frames, arrays = [], {}, {}
    for k in range(n_steps):
        x = speed_mps * dt_s * k
        frames[k], chans = render(start_m - x, hazard, rng)
        if channels:
            arrays[k] = chans
        steps.append(
            StepRecord(
                step=k,
                t_s=round(k * dt_s, 3),
                x_m=x,
                y_m=0.0,
                yaw_rad=0.0,
                v_mps=speed_mps,
                w_radps=0.0,
                action=[speed_mps, 0.0] if k < n_steps - 1 else None,
                goal=[start_m + 2.0, 0.0],
                frame=frame_name(k),
            )
        )
    meta = EpisodeMeta(
        episode_id=episode_id,
        source="test-builder",
        robot="straight-line",
        seed=seed,
        dt_s=dt_s,
        frame_stride=1,
        num_steps=n_steps,
        camera=CameraMeta(fov_deg=FOV_DEG, height_m=CAM_H_M, width=SIZE, height=SIZE),
        outcome=outcome,
        failure_step=n_steps - 1 if outcome == "collision" else None,
        channels=["depth", "semantic", "instance"] if channels else [],
        semantic_classes={str(k): v for k, v in CLASSES.items()} if channels else {},
        created_at="2026-01-01T00:00:00Z",
    )
    truth = None
    if ground_truth:
        cls, *_, cause = HAZARDS[hazard]
        truth = GroundTruth(
            outcome=outcome,
            cause_class=cause,
            collision=CollisionTruth(
                object_id=HAZARD_INSTANCE,
                object_class=CLASSES[cls],
                material="test",
                contact_point=[start_m, 0.0],
                step=n_steps - 1,
            ),
        )
    return write_episode(root, meta, steps, frames, channels=arrays, ground_truth=truth)


@pytest.fixture
def episode_factory():
    """The `build_episode` function (root, episode_id, **options) → folder."""
    return build_episode


@pytest.fixture
def tiny_episodes(tmp_path: Path) -> Path:
    """A folder with six episodes: two each of glass_door, pole and box."""
    root = tmp_path / "episodes"
    root.mkdir()
    for i, hazard in enumerate(["glass_door", "pole", "box"] * 2):
        build_episode(root, f"ep-{i:03d}", hazard=hazard, seed=i, n_steps=10 + i)
    return root


class StubBackend:
    """A scripted LLMBackend for parsing and control-flow tests (never a feature demo).

    `responder(method, messages, attempt)` returns the model's text, or raises
    (e.g. BackendError for a dead server). JSON answers are parsed with the
    serving package's parser and re-asked once on failure, like the real client.
    `finish_reason` may be set per answer by returning (text, finish_reason).
    """

    def __init__(self, responder, model_id: str = "stub-model") -> None:
        self.responder = responder
        self.model_id = model_id
        self.requests: list[tuple[str, list]] = []

    def _answer(self, method, messages, attempt):
        self.requests.append((method, messages))
        # a content hash, as a real backend's call id (so order-dependent records show up)
        self.last_call_id = stable_hash([method, messages, attempt])
        out = self.responder(method, messages, attempt)
        return out if isinstance(out, tuple) else (out, "stop")

    async def complete(self, messages, *, max_tokens, temperature=0.0, seed=0):
        from serving.protocol import CallResult

        text, finish = self._answer("complete", messages, 1)
        return CallResult(text=text, model=self.model_id, call_id=self.last_call_id, finish_reason=finish)

    async def complete_json(self, messages, schema, *, max_tokens, temperature=0.0, seed=0):
        from serving.protocol import CallResult
        from serving.structured import parse_json_answer

        for attempt in (1, 2):
            text, finish = self._answer("complete_json", messages, attempt)
            parsed, error = parse_json_answer(text, schema)
            if error is None:
                return CallResult(
                    text=text,
                    model=self.model_id,
                    call_id=self.last_call_id,
                    finish_reason=finish,
                    parsed=parsed,
                    attempts=attempt,
                )
        return CallResult(
            text=text,
            model=self.model_id,
            call_id=self.last_call_id,
            finish_reason=finish,
            error=error,
            attempts=2,
        )

    async def complete_choice(self, messages, choices, *, temperature=0.0, seed=0):
        from serving.protocol import CallResult
        from serving.structured import match_choice

        text, finish = self._answer("complete_choice", messages, 1)
        choice = match_choice(text, choices)
        return CallResult(
            text=text,
            model=self.model_id,
            call_id=self.last_call_id,
            finish_reason=finish,
            parsed=choice,
            error=None if choice else "no valid choice",
        )


@pytest.fixture
def stub_backend_factory():
    """StubBackend(responder, model_id="stub-model")."""
    return StubBackend
