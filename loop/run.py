"""The closed loop: evaluate → discover → regions → collect → fine-tune → evaluate.

`run_loop(cfg, out_dir)` fills one folder (docs/LOOP.md)::

    OUT/
      loop_config.yaml          the resolved LoopConfig
      stages.jsonl              start / finish / skip per stage: input hash, seconds
      base/data/, base/policy/  base dataset and policy (unless base.checkpoint is given)
      evals/<policy>/<set>/     fixed evaluation sets (in_distribution, ood): summary.json
      cycle<k>/<policy>/mine/   failure mining rollouts + failure episodes (a separate set)
      cycle<k>/<policy>/discover/  the failtax run folder (taxonomy.json, assignments.jsonl)
      cycle<k>/<policy>/regions.json, regions_<arm>.json
      cycle<k>/<arm>/data/, cycle<k>/<arm>/policy/   new expert data, fine-tuned policy
                                (`<arm>@r<j>`: replicate j, with its own seeds)
      results.json, report.md, report.html

Every stage is skipped when its outputs exist and its last `finish` line in
stages.jsonl has the same input hash (config values + hashes of its input
files) and nothing to retry (common/stages.py: a discover stage whose model
calls failed is redone); the stages underneath (collect, train, evaluate, discover) also resume
a partially done folder on their own, so a killed loop continues where it
stopped. Arms share the seeds and the budget: the same collection seed for
every arm, B samples each, fine-tuned with the same settings from the same
checkpoint on base + new data. The new-site arms (site_semantic, site_uniform)
collect in eval.ood_family and are evaluated on its held-out set only; an arm whose
regions file has no region (no mode matched a kind) is skipped and reported.
With `replicates: R` every arm runs R times;
replicate j > 0 draws its own collection seed (shared by its arms) and
fine-tunes with seed `nav.train.seed + j`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from common import (
    apply_overrides,
    atomic_write_json,
    atomic_write_text,
    derive_seed,
    dump_yaml,
    read_jsonl,
    stable_hash,
)
from common.stages import StageOutcome, StageRunner
from failtax.config import PipelineConfig
from failtax.pipeline import failed_calls_message, run_pipeline
from failtax.run_folder import read_explanations
from loop.config import SITE_ARMS, LoopConfig
from loop.regions import arm_regions, build_regions
from loop.report import write_results
from nav_policy.config import NavConfig

log = logging.getLogger(__name__)

EVAL_SETS = ("in_distribution", "ood")


def file_hash(path: str | os.PathLike) -> str:
    """Content hash of a file (checkpoints, manifests, regions files)."""
    return stable_hash(Path(path).read_bytes())


# ---------------------------------------------------------------------- helpers
def nav_config(cfg: LoopConfig, **dotted: Any) -> NavConfig:
    """cfg.nav with dotted overrides, e.g. nav_config(cfg, **{"collect.arm": "targeted"}).

    The sim config stays the one resolved when the loop config was loaded.
    """
    return NavConfig.model_validate(apply_overrides(cfg.nav.model_dump(mode="json"), dotted))


def _nav_section(cfg: LoopConfig, *names: str) -> dict:
    d = cfg.nav.model_dump(mode="json")
    return {n: d[n] for n in names}


def _manifest_id(root: Path) -> Any:
    m = json.loads((root / "manifest.json").read_text())
    return [m.get("fingerprint"), m.get("num_samples")]


def _eval_dir(out: Path, policy: str, which: str) -> Path:
    return out / "evals" / policy / which


# ---------------------------------------------------------------------- the loop
def run_loop(cfg: LoopConfig, out_dir: str | os.PathLike, *, backend: Any = None,
             progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the closed loop into `out_dir`; returns results.json's content.

    Args:
        cfg: the loop config.
        out_dir: the loop folder (module docstring).
        backend: an LLMBackend for discovery (None: built from cfg.pipeline.backend,
            the embedded model by default, started and stopped by the pipeline).
        progress: show progress bars.
    """
    from nav_policy.collect import collect
    from nav_policy.evaluate import evaluate_checkpoint, run_evaluation
    from nav_policy.train import train_policy

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "loop_config.yaml", dump_yaml(cfg))
    st = StageRunner(out)
    collect_sections = ("sim", "expert")
    train_sections = ("model", "train")

    # ---- base policy
    if cfg.base.checkpoint:
        base_ckpt = Path(cfg.base.checkpoint)
        if not base_ckpt.exists():
            raise ValueError(f"base.checkpoint {base_ckpt} does not exist")
        base_data = Path(cfg.base.data_dir) if cfg.base.data_dir else None
        if base_data is None:
            raise ValueError("base.checkpoint needs base.data_dir (the data it was trained on), "
                             "since every arm fine-tunes on base + new data")
    else:
        base_data = Path(cfg.base.data_dir) if cfg.base.data_dir else out / "base" / "data"
        base_ckpt = out / "base" / "policy" / "model.pt"
        ncfg = nav_config(cfg, **{"collect.arm": "uniform", "collect.seed": cfg.base.seed,
                                  "collect.budget_samples": cfg.base.budget_samples,
                                  "collect.family": cfg.eval.in_distribution_family})
        st.run("base/collect", {"nav": _nav_section(cfg, *collect_sections),
                                "collect": ncfg.collect.model_dump(mode="json")},
               [base_data / "manifest.json"], lambda: collect(ncfg, base_data, progress=progress))
        st.run("base/train", {"nav": _nav_section(cfg, *train_sections),
                              "data": _manifest_id(base_data)},
               [base_ckpt], lambda: train_policy(cfg.nav, [base_data], base_ckpt.parent,
                                                 progress=progress), on_change="refuse")

    def evaluate_policy(policy: str, ckpt: Path | None, only_ood: bool = False) -> None:
        """Evaluate a checkpoint (None: the camera-blind route follower) on the fixed sets."""
        sets = [] if only_ood else [("in_distribution", cfg.eval.in_distribution_family,
                                     cfg.eval.in_distribution_rollouts)]
        if cfg.eval.ood_rollouts:
            sets.append(("ood", cfg.eval.ood_family, cfg.eval.ood_rollouts))
        for which, family, n in sets:
            d = _eval_dir(out, policy, which)
            ecfg = nav_config(cfg, **{"evaluate.family": family, "evaluate.num_rollouts": n,
                                      "evaluate.eval_set_seed": cfg.eval.eval_set_seed,
                                      "evaluate.save_failures": False,
                                      "evaluate.save_all": False})
            if ckpt is None:
                spec = {"kind": "route_pursuit", "config": ecfg.model_dump(mode="json")}
                st.run(f"evaluate/{policy}/{which}",
                       {"sim": _nav_section(cfg, "sim"), "expert": _nav_section(cfg, "expert"),
                        "evaluate": ecfg.evaluate.model_dump(mode="json")},
                       [d / "summary.json"], lambda ecfg=ecfg, d=d, spec=spec: run_evaluation(
                           ecfg, spec, d, progress=progress))
                continue
            st.run(f"evaluate/{policy}/{which}",
                   {"sim": _nav_section(cfg, "sim"), "evaluate": ecfg.evaluate.model_dump(
                       mode="json"), "checkpoint": file_hash(ckpt)},
                   [d / "summary.json"],
                   lambda ecfg=ecfg, d=d: evaluate_checkpoint(ecfg, ckpt, d, progress=progress))

    evaluate_policy("base", base_ckpt)
    if cfg.eval.camera_blind:
        evaluate_policy(CAMERA_BLIND, None)

    # ---- cycles: each arm (and each replicate of it) continues from its own policy
    lineages = [(arm, rep, replicate_name(arm, rep)) for rep in range(cfg.replicates)
                for arm in cfg.arms]
    current = {name: base_ckpt for _, _, name in lineages}
    data_so_far: dict[str, list[Path]] = {name: [base_data] for _, _, name in lineages}
    ft_epochs = cfg.finetune_epochs or cfg.nav.train.epochs
    for cycle in range(cfg.cycles):
        # Failure mining and discovery once per distinct policy (all arms share the base).
        regions_by_policy: dict[str, Path] = {}
        for arm, _, lineage in lineages:
            if arm in UNTARGETED:
                continue
            policy = "base" if cycle == 0 else lineage
            if policy in regions_by_policy:
                continue
            cdir = out / f"cycle{cycle}" / policy
            regions_by_policy[policy] = _discover_regions(cfg, st, cdir, current[lineage],
                                                          f"cycle{cycle}/{policy}", backend,
                                                          progress)
        for arm, rep, lineage in lineages:
            # Every arm of one replicate shares the collection seed; replicate 0 keeps the
            # seeds of a run without replicates.
            collect_seed = int(derive_seed(cfg.seed, "arms", cycle, *(
                ("replicate", rep) if rep else ())) % (1 << 31))
            adir = out / f"cycle{cycle}" / lineage
            data = adir / "data"
            at_site = arm in SITE_ARMS
            overrides: dict[str, Any] = {
                "collect.seed": collect_seed, "collect.budget_samples": cfg.budget_samples,
                "collect.family": cfg.eval.ood_family if at_site
                else cfg.eval.in_distribution_family,
                "collect.arm": "uniform" if arm in UNTARGETED else "targeted",
                "collect.regions_path": None, "collect.dagger_checkpoint": None}
            dagger_hash = None
            if cfg.collection == "dagger":
                overrides["collect.dagger_checkpoint"] = str(current[lineage])
                overrides["collect.dagger_beta"] = cfg.dagger_beta
                dagger_hash = file_hash(current[lineage])
            regions_hash = None
            if arm not in UNTARGETED:
                policy = "base" if cycle == 0 else lineage
                rdir = regions_by_policy[policy].parent
                rfile = rdir / f"regions_{arm}.json"
                if not json.loads(rfile.read_text()).get("regions"):
                    log.warning("%s: %s; arm skipped (results.json -> skipped_arms)", lineage,
                                json.loads(rfile.read_text()).get("why", "no regions"))
                    continue
                overrides["collect.regions_path"] = str(rfile)
                regions_hash = file_hash(rfile)
            ncfg = nav_config(cfg, **overrides)
            st.run(f"cycle{cycle}/{lineage}/collect",
                   {"nav": _nav_section(cfg, *collect_sections),
                    "collect": {**ncfg.collect.model_dump(mode="json"), "regions_path": None,
                                "dagger_checkpoint": None},
                    "regions": regions_hash, "dagger": dagger_hash},
                   [data / "manifest.json"], lambda ncfg=ncfg, data=data: collect(
                       ncfg, data, progress=progress))
            data_so_far[lineage].append(data)
            ckpt = adir / "policy" / "model.pt"
            tcfg = nav_config(cfg, **{"train.epochs": ft_epochs,
                                      "train.seed": cfg.nav.train.seed + rep})
            dirs = list(data_so_far[lineage])
            init = current[lineage]
            st.run(f"cycle{cycle}/{lineage}/finetune",
                   {"nav": {"model": tcfg.model.model_dump(mode="json"),
                            "train": tcfg.train.model_dump(mode="json")},
                    "data": [_manifest_id(d) for d in dirs], "init": file_hash(init)},
                   [ckpt], lambda tcfg=tcfg, dirs=dirs, init=init, ckpt=ckpt: train_policy(
                       tcfg, dirs, ckpt.parent, init_checkpoint=init, progress=progress),
                   on_change="refuse")
            current[lineage] = ckpt
            name = lineage if cfg.cycles == 1 else f"{lineage}@cycle{cycle}"
            # a new-site arm is judged on the new site's held-out set only
            evaluate_policy(name, ckpt, only_ood=at_site)

    results: dict[str, Any] = {}

    def report() -> None:
        results.update(write_results(cfg, out))

    # The report is rebuilt every time (cheap), so wall times include this run's stages.
    st.run("report", {"t": time.time()}, [out / "results.json", out / "report.html"], report)
    return results


# the camera-blind route follower's evaluation folder (evals/camera_blind/)
CAMERA_BLIND = "camera_blind"
# arms that collect anywhere, with no regions (and need no discovery)
UNTARGETED = ("uniform", "site_uniform")


def replicate_name(arm: str, rep: int) -> str:
    """Folder and policy name of one replicate of an arm: `uniform`, `uniform@r1`, ..."""
    return arm if rep == 0 else f"{arm}@r{rep}"


def _discover(pcfg: PipelineConfig, run_dir: Path, episodes: Path, backend: Any,
              progress: bool) -> StageOutcome:
    """The failtax run of one mined set; failed model calls make the loop redo it on resume."""
    summary = run_pipeline(pcfg, run_dir, episodes=episodes, backend=backend, progress=progress)
    failed = summary.get("fallbacks_from_failed_calls") or {}
    if failed:
        log.warning("%s", failed_calls_message(summary, run_dir))
    return StageOutcome(retryable=sum(failed.values()))


def _discover_regions(cfg: LoopConfig, st: StageRunner, cdir: Path, ckpt: Path, tag: str,
                      backend: Any, progress: bool) -> Path:
    """Mine failures of `ckpt`, run failtax discover on them, map modes to regions."""
    from nav_policy.evaluate import evaluate_checkpoint

    mine = cdir / "mine"
    mcfg = nav_config(cfg, **{"evaluate.family": cfg.eval.in_distribution_family,
                              "evaluate.num_rollouts": cfg.eval.mining_rollouts,
                              "evaluate.eval_set_seed": cfg.eval.mining_set_seed,
                              "evaluate.save_failures": True, "evaluate.save_all": False})
    st.run(f"{tag}/mine", {"sim": _nav_section(cfg, "sim"),
                           "evaluate": mcfg.evaluate.model_dump(mode="json"),
                           "checkpoint": file_hash(ckpt)},
           [mine / "summary.json"], lambda: evaluate_checkpoint(mcfg, ckpt, mine,
                                                                progress=progress))
    episodes = mine / "episodes"
    n_fail = sum(1 for p in episodes.glob("*/meta.json")) if episodes.exists() else 0
    if n_fail == 0:
        raise ValueError(f"{tag}: the policy had no failure on the {cfg.eval.mining_rollouts} "
                         "mining rollouts; nothing to discover (raise eval.mining_rollouts)")
    run_dir = cdir / "discover"
    pcfg = cfg.pipeline
    st.run(f"{tag}/discover", {"pipeline": pcfg.model_dump(mode="json"),
                               "episodes": sorted(p.parent.name for p in
                                                  episodes.glob("*/meta.json"))},
           [run_dir / "taxonomy.json", run_dir / "assignments.jsonl"],
           lambda: _discover(pcfg, run_dir, episodes, backend, progress))
    regions_file = cdir / "regions.json"
    targeted = [a for a in cfg.arms if a not in UNTARGETED]

    def make_regions() -> None:
        explanations = {e.episode_id: e.failure_reason for e in read_explanations(run_dir)}
        doc = build_regions(
            json.loads((run_dir / "taxonomy.json").read_text()),
            read_jsonl(run_dir / "assignments.jsonl"), episodes, cfg.nav.sim,
            cfg.regions, budget_samples=cfg.budget_samples, split=cfg.split,
            min_mode_frequency=cfg.min_mode_frequency, family=cfg.eval.in_distribution_family,
            explanations=explanations,
            site_family=cfg.eval.ood_family if "site_semantic" in cfg.arms else None,
            shuffle_seed=cfg.regions.shuffle_seed)
        for arm in targeted:
            try:
                arm_doc = arm_regions(doc, arm)
            except ValueError as e:  # e.g. no mode text matched a kind of the new site
                arm_doc = {"schema_version": 1, "arm": arm, "regions": [], "why": str(e)}
            atomic_write_json(cdir / f"regions_{arm}.json", arm_doc)
        atomic_write_json(regions_file, doc)

    st.run(f"{tag}/regions", {"regions": cfg.regions.model_dump(mode="json"),
                              "budget": cfg.budget_samples, "split": cfg.split,
                              "min_mode_frequency": cfg.min_mode_frequency, "arms": targeted,
                              "sim": _nav_section(cfg, "sim"),
                              "taxonomy": file_hash(run_dir / "taxonomy.json"),
                              "explanations": file_hash(run_dir / "explanations.jsonl"),
                              "assignments": file_hash(run_dir / "assignments.jsonl")},
           [regions_file, *[cdir / f"regions_{a}.json" for a in targeted]], make_regions)
    return regions_file
