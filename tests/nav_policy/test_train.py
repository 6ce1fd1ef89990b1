"""Training is reproducible: same seed twice -> identical weights; resume -> same result."""

from __future__ import annotations

import pytest
import torch

from nav_policy.model import RobotLimits, load_checkpoint
from nav_policy.train import train_policy

LIMITS = RobotLimits(0.0, 1.0, 1.5, 1.5, 0.1)


def _cfg(tiny_cfg, epochs=2, seed=0):
    return tiny_cfg.model_copy(update={"train": tiny_cfg.train.model_copy(update={
        "epochs": epochs, "seed": seed, "batch_size": 32, "device": "cpu"})})


def _weights(path):
    net, _ = load_checkpoint(path)
    return net.state_dict()


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_twice_gives_identical_weights(tmp_path, tiny_cfg, synthetic_dataset):
    data = synthetic_dataset(tmp_path / "data")
    cfg = _cfg(tiny_cfg)
    m1 = train_policy(cfg, [data], tmp_path / "a", limits=LIMITS, progress=False)
    train_policy(cfg, [data], tmp_path / "b", limits=LIMITS, progress=False)
    assert _same(_weights(tmp_path / "a" / "model.pt"), _weights(tmp_path / "b" / "model.pt"))
    assert m1["train/loss"] > 0
    # A different seed gives different weights (the test above can fail).
    train_policy(_cfg(tiny_cfg, seed=1), [data], tmp_path / "c", limits=LIMITS, progress=False)
    assert not _same(_weights(tmp_path / "a" / "model.pt"), _weights(tmp_path / "c" / "model.pt"))


def test_resume_matches_uninterrupted_run(tmp_path, tiny_cfg, synthetic_dataset):
    data = synthetic_dataset(tmp_path / "data")
    train_policy(_cfg(tiny_cfg, epochs=2), [data], tmp_path / "full", limits=LIMITS, progress=False)
    # "Killed" after epoch 1: a 1-epoch run leaves checkpoints/last.pt at epoch 1.
    train_policy(_cfg(tiny_cfg, epochs=1), [data], tmp_path / "part", limits=LIMITS, progress=False)
    train_policy(_cfg(tiny_cfg, epochs=2), [data], tmp_path / "part", limits=LIMITS, progress=False)
    assert _same(_weights(tmp_path / "full" / "model.pt"), _weights(tmp_path / "part" / "model.pt"))


def test_fine_tune_starts_from_checkpoint(tmp_path, tiny_cfg, synthetic_dataset):
    base = synthetic_dataset(tmp_path / "base", seed=0)
    new = synthetic_dataset(tmp_path / "new", seed=1)
    train_policy(_cfg(tiny_cfg, epochs=1), [base], tmp_path / "base_run", limits=LIMITS,
                 progress=False)
    m = train_policy(_cfg(tiny_cfg, epochs=1), [base, new], tmp_path / "ft",
                     init_checkpoint=tmp_path / "base_run" / "model.pt", progress=False)
    assert m["train/num_samples"] + m["val/num_samples"] == 512
    _, extra = load_checkpoint(tmp_path / "ft" / "model.pt")
    assert extra["init_checkpoint"].endswith("model.pt")


def test_label_agreement_measures_how_the_policy_follows_the_labels(tmp_path, tiny_cfg,
                                                                     synthetic_dataset):
    import numpy as np

    from nav_policy.dataset import Shard, read_shard, write_manifest, write_shard
    from nav_policy.model import images_to_tensor, net_command, vector_features
    from nav_policy.train import label_agreement

    data = synthetic_dataset(tmp_path / "data")
    train_policy(_cfg(tiny_cfg, epochs=1), [data], tmp_path / "run", limits=LIMITS,
                 progress=False)
    ckpt = tmp_path / "run" / "model.pt"
    net, _ = load_checkpoint(ckpt)
    shard = read_shard(next((data / "shards").glob("*.npz")))
    a = shard.arrays
    target = a["route"] if net.config.target_input == "route" else a["goal"]
    feats = vector_features(a["velocity"], target, net.limits, net.config.goal_range_m,
                            net.config.ego_inputs)
    with torch.no_grad():
        out = net.eval()(images_to_tensor(a["image"]), torch.from_numpy(feats)).numpy()
    own = net_command(out, target, net.config, net.limits).astype(np.float32)

    def relabel(name, command):
        root = tmp_path / name
        write_shard(root, Shard(0, {**a, "command": command}, shard.episodes, "synthetic"))
        write_manifest(root, {"arm": "synthetic", "fingerprint": name}, {0: len(command)},
                       len(command))
        # "hard" here: the policy's own larger turns (a 1-epoch net turns gently)
        share = 0.5 * float(np.abs(own[:, 1]).max()) / net.limits.max_turn_rate_radps
        return label_agreement(ckpt, root, max_samples=None, hard_turn_share=share)

    same = relabel("own", own)  # the expert labelled exactly what the policy commands
    assert same["samples"] == 256 and same["turn_r2"] > 0.999 and same["speed_r2"] > 0.999
    assert 0 < same["hard_turns"]["share"] < 1
    assert same["hard_turns"]["ratio"] == pytest.approx(1.0, abs=1e-4)
    assert same["hard_turns"]["same_direction"] == 1.0
    flipped = relabel("flipped", own * np.array([1.0, -1.0], np.float32))
    assert flipped["hard_turns"]["same_direction"] == 0.0
    assert flipped["hard_turns"]["ratio"] == pytest.approx(-1.0, abs=1e-4)
    assert flipped["turn_r2"] < 0
    assert label_agreement(ckpt, tmp_path / "own", max_samples=100)["samples"] == 100


class _RunsCode:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def test_resume_refuses_a_checkpoint_carrying_code(tmp_path, tiny_cfg, synthetic_dataset):
    data = synthetic_dataset(tmp_path / "data")
    train_policy(_cfg(tiny_cfg, epochs=1), [data], tmp_path / "run", limits=LIMITS, progress=False)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    marker = tmp_path / "ran"
    state["payload"] = _RunsCode(marker)
    torch.save(state, last)
    with pytest.raises(ValueError, match="refus"):
        train_policy(_cfg(tiny_cfg, epochs=2), [data], tmp_path / "run", limits=LIMITS,
                     progress=False)
    assert not marker.exists()
