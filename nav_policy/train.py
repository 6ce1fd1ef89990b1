"""Train (or fine-tune) the CNN policy on expert datasets by behaviour cloning.

Reads top to bottom: config -> data -> model -> loop. Each epoch's sample
order and augmentation come from RNGs derived from (seed, epoch), so a run is
bit-for-bit repeatable on CPU (with `deterministic` and a fixed thread count)
and a killed run resumes from its last checkpoint to the same result.

Outputs in `out_dir`:
    model.pt            final policy (load with nav_policy.model.load_checkpoint)
    checkpoints/last.pt resumable state (weights, optimiser, epoch)
    metrics.jsonl       one line per epoch: train/loss, val/loss, train/samples_per_s
    train_config.json   the resolved config and the datasets used

Example:
    >>> train_policy(cfg, ["data/base"], "runs/base")
    >>> train_policy(cfg, ["data/base", "data/targeted"], "runs/ft",
    ...              init_checkpoint="runs/base/model.pt")
"""

from __future__ import annotations

import io
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from common import (
    append_jsonl,
    atomic_write_bytes,
    atomic_write_json,
    derive_rng,
    derive_seed,
)
from nav_policy.config import ModelConfig, NavConfig, TrainConfig
from nav_policy.dataset import NavData, load_datasets
from nav_policy.model import (
    NavPolicyNet,
    RobotLimits,
    load_checkpoint,
    load_tensors,
    net_command,
    net_targets,
    save_checkpoint,
    vector_features,
)

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """"auto" -> CUDA when available, else CPU; "cuda" without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA device; "
                         "use 'auto' or 'cpu'")
    return torch.device(name)


def set_determinism(cfg: TrainConfig) -> None:
    """Seed torch, fix the thread count and (optionally) force deterministic kernels."""
    # cuBLAS needs this before the first CUDA call to be deterministic.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(derive_seed(cfg.seed, "init") % (2**31))
    torch.set_num_threads(cfg.num_threads)
    torch.use_deterministic_algorithms(cfg.deterministic)


def _split_groups(groups: np.ndarray, val_fraction: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample indices of train and validation, splitting whole episodes."""
    uniq = np.unique(groups)
    n_val = round(len(uniq) * val_fraction)
    if val_fraction > 0 and len(uniq) > 1:
        n_val = max(1, min(n_val, len(uniq) - 1))
    else:
        n_val = 0
    val_groups = derive_rng(seed, "val-split").permutation(uniq)[:n_val]
    is_val = np.isin(groups, val_groups)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def _tensors(data: NavData, limits: RobotLimits, model_cfg: ModelConfig,
             device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    images = torch.from_numpy(data.image).to(device)  # uint8, converted per batch
    target = data.route if model_cfg.target_input == "route" else data.goal
    vec = torch.from_numpy(vector_features(data.velocity, target, limits,
                                           model_cfg.goal_range_m, model_cfg.ego_inputs)).to(device)
    tgt = torch.from_numpy(net_targets(data.command, target, model_cfg, limits)).to(device)
    return images, vec, tgt


def _loss(pred: torch.Tensor, target: torch.Tensor, turn_weight: float) -> torch.Tensor:
    err = (pred - target) ** 2
    return (err[:, 0] + turn_weight * err[:, 1]).mean() / (1.0 + turn_weight)


def _batch_images(images: torch.Tensor, idx: torch.Tensor, jitter: float,
                  gen: torch.Generator | None) -> torch.Tensor:
    x = images[idx].permute(0, 3, 1, 2).float().div_(255.0)
    if jitter > 0 and gen is not None:
        scale = 1.0 + (torch.rand(len(idx), 1, 1, 1, generator=gen) * 2 - 1) * jitter
        x = (x * scale.to(x.device)).clamp_(0.0, 1.0)
    return x


@torch.no_grad()
def evaluate_loss(net: nn.Module, images: torch.Tensor, vec: torch.Tensor, tgt: torch.Tensor,
                  idx: np.ndarray, batch_size: int, turn_weight: float) -> float:
    """Mean loss over `idx` (no augmentation)."""
    if len(idx) == 0:
        return float("nan")
    net.eval()
    total = 0.0
    for s in range(0, len(idx), batch_size):
        b = torch.from_numpy(idx[s: s + batch_size]).to(images.device)
        pred = net(_batch_images(images, b, 0.0, None), vec[b])
        total += float(_loss(pred, tgt[b], turn_weight)) * len(b)
    return total / len(idx)


@torch.no_grad()
def label_agreement(checkpoint: str | os.PathLike, dataset_dir: str | os.PathLike, *,
                    max_samples: int | None = 20000, seed: int = 0,
                    hard_turn_share: float = 0.5) -> dict[str, Any]:
    """How closely a policy's commands follow the expert's labels on a dataset.

    Run on DAgger data (the states a policy visits, labelled by the expert) it says
    whether the policy would have turned where the expert turned: the failure
    rate says that the policy fails, this says how. In command space (m/s, rad/s),
    not the net's scaled outputs.

    Args:
        checkpoint: the policy.
        dataset_dir: a collected dataset (its manifest's samples).
        max_samples: evaluate a random subset of this size (None: all).
        seed: seed of the subset.
        hard_turn_share: a label is a hard turn at this share of the maximum turn rate.

    Returns:
        {"samples", "turn_r2", "speed_r2", "turn_mae_radps", "hard_turns": {"share",
         "expert_radps" (mean |w|), "policy_radps" (the policy's turn rate in the
         expert's direction, mean), "ratio", "same_direction"}}.
    """
    net, _ = load_checkpoint(checkpoint)
    net.eval()
    data = load_datasets([dataset_dir])
    idx = np.arange(len(data))
    if max_samples is not None and len(idx) > max_samples:
        idx = np.sort(derive_rng(seed, "agreement").choice(idx, max_samples, replace=False))
    cfg, limits = net.config, net.limits
    target = (data.route if cfg.target_input == "route" else data.goal)[idx]
    feats = torch.from_numpy(vector_features(data.velocity[idx], target, limits, cfg.goal_range_m,
                                             cfg.ego_inputs))
    images = torch.from_numpy(data.image[idx])
    outs = [net(_batch_images(images, torch.arange(s, min(s + 512, len(idx))), 0.0, None),
                feats[s: s + 512]).numpy() for s in range(0, len(idx), 512)]
    pol = net_command(np.concatenate(outs), target, cfg, limits)
    exp = np.asarray(data.command[idx], np.float64)

    def r2(a: np.ndarray, b: np.ndarray) -> float | None:
        var = float(b.var())
        return 1.0 - float(((a - b) ** 2).mean()) / var if var > 0 else None

    w_exp, w_pol = exp[:, 1], pol[:, 1]
    hard = np.abs(w_exp) >= hard_turn_share * limits.max_turn_rate_radps
    hard_turns: dict[str, float | None] = {"share": float(hard.mean()), "expert_radps": None,
                                           "policy_radps": None, "ratio": None,
                                           "same_direction": None}
    if hard.any():
        toward = w_pol[hard] * np.sign(w_exp[hard])
        e, t = float(np.abs(w_exp[hard]).mean()), float(toward.mean())
        hard_turns.update(expert_radps=e, policy_radps=t, ratio=t / e,
                          same_direction=float((toward > 0).mean()))
    return {"samples": len(idx), "turn_r2": r2(w_pol, w_exp), "speed_r2": r2(pol[:, 0], exp[:, 0]),
            "turn_mae_radps": float(np.abs(w_pol - w_exp).mean()), "hard_turns": hard_turns}


def train_policy(
    cfg: NavConfig,
    dataset_dirs: list[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    init_checkpoint: str | os.PathLike | None = None,
    limits: RobotLimits | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Behaviour-clone the expert's commands; resume if `out_dir` holds a run.

    Args:
        cfg: the nav config (uses cfg.model and cfg.train).
        dataset_dirs: collected datasets (base + new data when fine-tuning).
        out_dir: run folder (see the module docstring).
        init_checkpoint: start from these weights (fine-tuning); the model
            config then comes from the checkpoint.
        limits: robot limits; default: from the sim config in `cfg`.
        progress: show a tqdm bar.

    Returns:
        Final metrics (train/loss, val/loss, train/samples_per_s, device, ...).
    """
    tcfg = cfg.train
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(tcfg.device)
    set_determinism(tcfg)
    log.info("train: %s -> %s on %s", [str(d) for d in dataset_dirs], out, device)

    # ---- data
    data = load_datasets(list(dataset_dirs))
    if limits is None:
        limits = RobotLimits.from_sim(cfg.sim)
    image_hw = tuple(data.image.shape[1:3])

    # ---- model
    if init_checkpoint is not None:
        net, _ = load_checkpoint(init_checkpoint, device)
        if tuple(net.image_hw) != image_hw:
            raise ValueError(f"checkpoint {init_checkpoint} expects images {net.image_hw}, "
                             f"the data has {image_hw}; collect with the same camera")
        limits = net.limits
        model_cfg = net.config
    else:
        model_cfg = cfg.model
        net = NavPolicyNet(model_cfg, image_hw, limits).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=tcfg.learning_rate, weight_decay=tcfg.weight_decay)
    start_epoch = 0
    last = out / "checkpoints" / "last.pt"
    if last.exists():
        state = load_tensors(last, device)
        net.load_state_dict(state["state_dict"])
        opt.load_state_dict(state["optimizer"])
        start_epoch = int(state["epoch"])
        log.info("train: resuming after epoch %d", start_epoch)

    atomic_write_json(out / "train_config.json", {
        "config": cfg.model_dump(mode="json"), "datasets": [str(d) for d in dataset_dirs],
        "init_checkpoint": str(init_checkpoint) if init_checkpoint else None,
        "num_samples": len(data), "device": str(device), "num_parameters": net.num_parameters,
    })

    images, vec, tgt = _tensors(data, limits, model_cfg, device)
    train_idx, val_idx = _split_groups(data.group, tcfg.val_fraction, tcfg.seed)
    if len(train_idx) == 0:
        raise ValueError("no training samples after the validation split; lower train.val_fraction")
    metrics: dict[str, Any] = {}
    steps_per_epoch = (len(train_idx) + tcfg.batch_size - 1) // tcfg.batch_size
    bar = tqdm(total=(tcfg.epochs - start_epoch) * steps_per_epoch, disable=not progress,
               desc="train", unit="batch")
    for epoch in range(start_epoch, tcfg.epochs):
        net.train()
        order = derive_rng(tcfg.seed, "order", epoch).permutation(train_idx)
        gen = torch.Generator().manual_seed(derive_seed(tcfg.seed, "jitter", epoch) % (2**63))
        t0, total, seen = time.perf_counter(), 0.0, 0
        for s in range(0, len(order), tcfg.batch_size):
            b = torch.from_numpy(order[s: s + tcfg.batch_size]).to(device)
            pred = net(_batch_images(images, b, tcfg.brightness_jitter, gen), vec[b])
            loss = _loss(pred, tgt[b], tcfg.turn_loss_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
            seen += len(b)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{total / seen:.4f}")
        elapsed = time.perf_counter() - t0
        metrics = {
            "epoch": epoch + 1,
            "train/loss": total / seen,
            "val/loss": evaluate_loss(net, images, vec, tgt, val_idx, 512, tcfg.turn_loss_weight),
            "train/samples_per_s": seen / max(elapsed, 1e-9),
            "train/num_samples": len(train_idx),
            "val/num_samples": len(val_idx),
        }
        append_jsonl(out / "metrics.jsonl", metrics)
        _save_resumable(last, net, opt, epoch + 1)
        log.info("train: epoch %d train/loss %.4f val/loss %.4f", epoch + 1,
                 metrics["train/loss"], metrics["val/loss"])
    bar.close()
    save_checkpoint(out / "model.pt", net.cpu(), extra={
        "datasets": [str(d) for d in dataset_dirs], "train": tcfg.model_dump(mode="json"),
        "init_checkpoint": str(init_checkpoint) if init_checkpoint else None,
    })
    if not metrics:  # resumed a finished run
        rows = [r for r in _read_metrics(out) if "train/loss" in r]
        metrics = rows[-1] if rows else {}
    metrics = {**metrics, "device": str(device), "num_parameters": net.num_parameters}
    atomic_write_json(out / "final_metrics.json", metrics)
    return metrics


def _save_resumable(path: Path, net: nn.Module, opt: torch.optim.Optimizer, epoch: int) -> None:
    buf = io.BytesIO()
    torch.save({"state_dict": net.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch}, buf)
    atomic_write_bytes(path, buf.getvalue())


def _read_metrics(out: Path) -> list[dict]:
    from common import read_jsonl

    return read_jsonl(out / "metrics.jsonl")
