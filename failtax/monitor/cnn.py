"""Frame classifiers as monitors: the supervised baseline and the distilled monitor.

One small CNN (three conv blocks, a linear head; NatureCNN-style sizing with a dummy
forward) on a logged camera frame, trained two ways:

- **supervised** (the paper's ENet-BC analogue): a frame is UNSAFE when the episode's
  collision follows within `cnn.horizon_s` seconds, from the episodes' outcomes;
- **distilled**: the labels are a model monitor's own decisions on logged training
  episodes (its decisions.jsonl): UNSAFE/SAFE and the failure mode it named, so a
  monitor fast enough for the control loop inherits the taxonomy monitor's judgement
  and names the coming mode too.

torch is imported inside functions (a heavy optional dependency).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common import read_jsonl
from failtax.monitor.config import CNNConfig, MonitorConfig
from failtax.monitor.llm import CALIBRATION_FILE, SAFE, UNSAFE, Decision
from failtax.monitor.observe import DecisionPoint, decision_points, end_time_s
from failtax.sources import Episode

NONE_MODE = "none"


@dataclass
class FrameSet:
    """Frames with labels: images (N, 3, H, W) float32 in [0, 1], unsafe (N,), mode (N,)."""

    images: np.ndarray
    unsafe: np.ndarray
    mode: np.ndarray  # index into `modes`; -1 = no label
    modes: list[str]


def frame_array(episode: Episode, frame_index: int, image_px: int) -> np.ndarray:
    """A logged frame as the network's input (see `image_array`)."""
    return image_array(episode.load_frame(frame_index), image_px)


def image_array(rgb: np.ndarray, image_px: int) -> np.ndarray:
    """An (H, W, 3) uint8 RGB image as (3, px, px) float32 in [0, 1] (resized when needed)."""
    if rgb.shape[0] != image_px or rgb.shape[1] != image_px:
        from PIL import Image

        rgb = np.asarray(Image.fromarray(rgb).resize((image_px, image_px), Image.BILINEAR))
    return np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32) / 255.0


def supervised_frames(episodes: list[Episode], cfg: MonitorConfig) -> FrameSet:
    """Every decision point of every episode, UNSAFE when a collision follows within
    `cnn.horizon_s` (training episodes: all frames, no `horizon_s` cut)."""
    cfg_all = cfg.model_copy(update={"horizon_s": None})
    images, labels = [], []
    for ep in episodes:
        failure = ep.meta["outcome"] in cfg.failure_outcomes
        t_end = end_time_s(ep)
        for p in decision_points(ep, cfg_all):
            images.append(frame_array(ep, p.frame_index, cfg.cnn.image_px))
            labels.append(bool(failure and t_end - p.t_s <= cfg.cnn.horizon_s))
    return FrameSet(np.stack(images), np.asarray(labels, np.float32),
                    np.full(len(labels), -1, np.int64), [])


def teacher_threshold(teacher_decisions: str | Path) -> float | None:
    """The UNSAFE threshold a probability teacher was calibrated to: `calibration.json`
    beside its decisions.jsonl (written by `evaluate --calibrate`), else None."""
    path = Path(teacher_decisions).parent / CALIBRATION_FILE
    return float(json.loads(path.read_text())["threshold"]) if path.is_file() else None


def distilled_frames(episodes: list[Episode], cfg: MonitorConfig, teacher_decisions: str | Path,
                     threshold: float | None = None) -> FrameSet:
    """Frames labelled with a teacher monitor's decisions (its decisions.jsonl): the
    verdict and the mode it named. Only decisions a model really made are used.

    With `threshold`, a decision that carries P(UNSAFE) is UNSAFE when it reaches the
    threshold, whatever verdict was recorded: a probability teacher's calibration run
    records its verdicts at the threshold it had before calibration."""
    teacher = {r["episode_id"]: r for r in read_jsonl(Path(teacher_decisions))}
    modes = sorted({d["mode"] for r in teacher.values() for d in r["decisions"] if d.get("mode")})
    index = {m: i for i, m in enumerate([NONE_MODE, *modes])}
    images, unsafe, mode = [], [], []
    by_id = {e.episode_id: e for e in episodes}
    for eid, record in sorted(teacher.items()):
        ep = by_id.get(eid)
        if ep is None:
            continue
        frame_of = {s: i for i, s in enumerate(ep.frame_steps) if s is not None}
        for d in record["decisions"]:
            if d["source"] != "model" or d["step"] not in frame_of:
                continue
            images.append(frame_array(ep, frame_of[d["step"]], cfg.cnn.image_px))
            p = d.get("p_unsafe")
            unsafe.append(p >= threshold if threshold is not None and p is not None
                          else d["verdict"] == UNSAFE)
            mode.append(index[d.get("mode") or NONE_MODE])
    if not images:
        raise ValueError(f"no model decisions of {teacher_decisions} match the training episodes; "
                         "run the teacher monitor on the same episode folder first")
    return FrameSet(np.stack(images), np.asarray(unsafe, np.float32), np.asarray(mode, np.int64),
                    [NONE_MODE, *modes])


def _net(cfg: CNNConfig, num_modes: int):
    import torch
    from torch import nn

    layers, c_in = [], 3
    for c in cfg.channels:
        layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
        c_in = c
    trunk = nn.Sequential(*layers, nn.Flatten())
    with torch.no_grad():
        flat = trunk(torch.zeros(1, 3, cfg.image_px, cfg.image_px)).shape[1]

    class FrameMonitorNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.trunk = trunk
            self.hidden = nn.Sequential(nn.Linear(flat, 64), nn.ReLU())
            self.unsafe = nn.Linear(64, 1)
            self.mode = nn.Linear(64, max(num_modes, 1))

        def forward(self, x):
            h = self.hidden(self.trunk(x - 0.5))  # frames in [0, 1], centred
            return self.unsafe(h).squeeze(-1), self.mode(h)

    return FrameMonitorNet()


def train_cnn(frames: FrameSet, cfg: CNNConfig, out_path: str | Path, *, kind: str,
              progress: bool = True) -> dict[str, Any]:
    """Train the frame classifier on `frames` and save it to `out_path`.

    Returns training stats: samples, positives, final loss, seconds, samples/s.
    """
    import torch
    from torch import nn

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    net = _net(cfg, len(frames.modes))
    opt = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate)
    x = torch.from_numpy(frames.images)
    y = torch.from_numpy(frames.unsafe)
    m = torch.from_numpy(frames.mode)
    pos = float(y.sum())
    # balance the classes: collisions are a small share of frames
    bce = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(max(1.0, (len(y) - pos) / max(pos, 1.0))))
    ce = nn.CrossEntropyLoss(ignore_index=-1)
    rng = np.random.default_rng(cfg.seed)
    start, loss_value = time.perf_counter(), float("nan")
    from tqdm import tqdm

    for _ in tqdm(range(cfg.epochs), desc=f"train {kind}", unit="epoch", disable=not progress):
        order = rng.permutation(len(y))
        for i in range(0, len(order), cfg.batch_size):
            idx = torch.from_numpy(order[i: i + cfg.batch_size])
            logit, mode_logits = net(x[idx])
            loss = bce(logit, y[idx])
            if frames.modes and (m[idx] >= 0).any():
                loss = loss + ce(mode_logits, m[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_value = float(loss.detach())
    seconds = time.perf_counter() - start
    meta = {"kind": kind, "modes": frames.modes, "cnn": cfg.model_dump(mode="json"),
            "samples": len(y), "positives": int(pos)}
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    torch.save({"state_dict": net.state_dict(), "meta": json.dumps(meta)}, tmp)
    tmp.replace(out)
    return {**meta, "final_loss": loss_value, "train_s": seconds,
            "samples_per_s": len(y) * cfg.epochs / seconds if seconds else None}


class CNNMonitor:
    """A trained frame classifier as a monitor (offline over episodes, or online)."""

    needs_text = False

    def __init__(self, cfg: MonitorConfig, checkpoint: str | Path | None = None) -> None:
        import torch

        path = Path(checkpoint or cfg.checkpoint_path or "")
        if not path.is_file():
            raise FileNotFoundError(
                f"no monitor checkpoint at {path}; train one with `failtax monitor train` and set "
                "monitor.checkpoint_path")
        blob = torch.load(path, map_location="cpu", weights_only=True)
        self.meta = json.loads(blob["meta"])
        self.cnn = CNNConfig.model_validate(self.meta["cnn"])
        self.cnn.threshold = cfg.cnn.threshold
        self.modes: list[str] = self.meta["modes"]
        torch.set_num_threads(cfg.cnn.threads)
        self.net = _net(self.cnn, len(self.modes))
        try:
            self.net.load_state_dict(blob["state_dict"])
        except RuntimeError as e:
            raise ValueError(
                f"{path} was written for another version of the monitor network "
                f"({str(e).splitlines()[0]}); retrain it with `failtax monitor train`") from None
        self.net.eval()
        self.cfg = cfg
        self.name = cfg.label
        self.model = f"cnn:{self.meta['kind']}:{path.name}"

    def predict(self, images: np.ndarray) -> tuple[np.ndarray, list[str | None]]:
        """P(UNSAFE) per image (N, 3, H, W) and the mode named (distilled nets)."""
        import torch

        with torch.inference_mode():
            logit, mode_logits = self.net(torch.from_numpy(np.asarray(images, np.float32)))
        p = torch.sigmoid(logit).numpy()
        modes: list[str | None] = [None] * len(p)
        if self.modes:
            names = [self.modes[i] for i in mode_logits.argmax(-1).tolist()]
            modes = [None if n == NONE_MODE else n for n in names]
        return p, modes

    def decide_frame(self, rgb: np.ndarray, step: int, t_s: float) -> Decision:
        """One online decision on one camera image (H, W, 3 uint8), as the robot sees it."""
        p, modes = self.predict(image_array(rgb, self.cnn.image_px)[None])
        return self._decision(float(p[0]), modes[0], step, t_s)

    def _decision(self, p: float, mode: str | None, step: int, t_s: float) -> Decision:
        unsafe = p >= self.cnn.threshold
        return Decision(step, t_s, UNSAFE if unsafe else SAFE, mode=mode if unsafe else None,
                        reason=f"p_unsafe={p:.2f}", source="cnn", p_unsafe=round(p, 4))

    async def decide_episode(self, episode: Episode, points: list[DecisionPoint]
                             ) -> list[Decision]:
        if not points:
            return []
        images = np.stack([frame_array(episode, p.frame_index, self.cnn.image_px) for p in points])
        p, modes = self.predict(images)
        return [self._decision(float(pi), mi, pt.step, pt.t_s) for pi, mi, pt in zip(p, modes, points)]
