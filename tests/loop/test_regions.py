"""Failure modes → regions: collision sites from the logs, semantic matches, budget split."""

from __future__ import annotations

import builtins
import io
import json
from pathlib import Path

import pytest

from common.episode import (
    CameraMeta,
    CollisionTruth,
    EpisodeMeta,
    GroundTruth,
    StepRecord,
    write_episode,
)
from loop.config import LoopConfig, RegionsConfig
from loop.regions import (
    arm_regions,
    build_regions,
    mode_weights,
    read_collision_site,
    split_budget,
)

BUILDING_SEED = 3  # office_a-000003: glass doors 7, 25, 29; chairs 39, 41, ...
GLASS_DOORS = {7: (2.36, 5.82), 25: (3.33, 8.90)}
CHAIRS = {45: (10.40, 3.18), 46: (9.08, 2.70)}
DECOY_CONTACT = (20.0, 15.0)  # what ground_truth.json claims: must never be used


def _write_episode(root: Path, eid: str, target_xy, failure_step: int = 5,
                   outcome: str = "collision") -> tuple[float, float]:
    """A collision episode driving toward `target_xy`; returns the pose at failure_step.

    steps.jsonl goes on past failure_step (as a log with trailing records could),
    and ground_truth.json names a decoy contact point far away.
    """
    tx, ty = target_xy
    poses = [(tx - 0.3 - 0.1 * (failure_step - k), ty) for k in range(failure_step + 3)]
    steps = [StepRecord(step=k, t_s=0.1 * k, x_m=x, y_m=y, yaw_rad=0.0, v_mps=0.5, w_radps=0.0,
                        action=[0.0, 0.0], goal=[tx + 3, ty], frame=None)
             for k, (x, y) in enumerate(poses)]
    meta = EpisodeMeta(
        episode_id=eid, source="test", robot="test", env_id="failtax/IndoorNav-v0",
        building_id=f"office_a-{BUILDING_SEED:06d}", building_family="office_a", seed=0,
        dt_s=0.1, frame_stride=1, num_steps=len(poses),
        camera=CameraMeta(fov_deg=90.0, height_m=0.5, width=32, height=32), outcome=outcome,
        failure_step=failure_step if outcome == "collision" else None)
    truth = GroundTruth(outcome="collision", cause_class="chair", collision=CollisionTruth(
        object_id=45, object_class="chair", material="fabric",
        contact_point=list(DECOY_CONTACT), step=failure_step))
    write_episode(root, meta, steps, frames={}, ground_truth=truth)
    return poses[failure_step]


@pytest.fixture(scope="module")
def failures(tmp_path_factory):
    root = tmp_path_factory.mktemp("episodes")
    expected = {}
    for i, (oid, xy) in enumerate(GLASS_DOORS.items()):
        expected[f"glass-{i}"] = _write_episode(root, f"glass-{i}", xy)
    for i, (oid, xy) in enumerate(CHAIRS.items()):
        expected[f"chair-{i}"] = _write_episode(root, f"chair-{i}", xy, failure_step=4)
    # A timeout has no collision site; it is reported, not used.
    _write_episode(root, "timeout-0", (5.0, 5.0), outcome="timeout")
    taxonomy = {"schema_version": 1, "strategy": "cluster-then-name", "modes": [
        {"name": "transparent glass door", "keywords": ["glass", "door", "transparent"],
         "description": "The robot drives into a transparent glass door it cannot see.",
         "frequency": 0.6, "count": 3},
        {"name": "chair legs", "keywords": ["chair", "legs"],
         "description": "Collision with the thin legs of a chair.", "frequency": 0.4,
         "count": 2}]}
    assignments = [{"episode_id": "glass-0", "modes": ["transparent glass door"]},
                   {"episode_id": "glass-1", "modes": ["transparent glass door"]},
                   {"episode_id": "timeout-0", "modes": ["transparent glass door"]},
                   {"episode_id": "chair-0", "modes": ["chair legs"]},
                   {"episode_id": "chair-1", "modes": ["chair legs"]},
                   {"episode_id": "odd-0", "modes": ["outlier"]}]
    return root, expected, taxonomy, assignments


@pytest.fixture(scope="module")
def sim_config():
    from sim.config import SimConfig

    return SimConfig()


@pytest.fixture(scope="module")
def regions_doc(failures, sim_config):
    root, _, taxonomy, assignments = failures
    rc = RegionsConfig(catalogue_buildings=1, semantic_source="mode")
    return build_regions(taxonomy, assignments, root, sim_config, rc, budget_samples=1001,
                         family="office_a")


def test_collision_site_is_the_pose_at_failure_step(failures):
    root, expected, _, _ = failures
    for eid, pose in expected.items():
        site, why = read_collision_site(root / eid)
        if eid.startswith("timeout"):
            assert site is None and "timeout" in why
            continue
        assert why == ""
        assert site.xy == pytest.approx(pose)
        assert site.building_seed == BUILDING_SEED
        assert site.xy != pytest.approx(DECOY_CONTACT)


def test_collision_site_keeps_replay_starts_before_the_failure(failures):
    root, expected, _, _ = failures
    site, _ = read_collision_site(root / "glass-0", replay_offsets_s=[0.2, 0.45, 9.0])
    # failure at step 5 (t 0.5 s), poses 0.1 m apart: 0.2 s before is step 3, 0.45 s is step 0
    (tx, ty), (fx, fy) = GLASS_DOORS[7], expected["glass-0"]
    assert [s["before_s"] for s in site.starts] == [0.2, 0.45]  # 9 s is before the log
    assert site.starts[0]["xy"] == pytest.approx([fx - 0.2, fy])
    assert site.starts[1]["xy"] == pytest.approx([fx - 0.5, fy])
    assert all(s["goal_xy"] == pytest.approx([tx + 3, ty]) for s in site.starts)


def test_regions_place_sites_at_the_failures(failures, regions_doc):
    _, expected, _, _ = failures
    glass, chair = regions_doc["modes"]
    assert [s["episode_id"] for s in glass["collision_sites"]] == ["glass-0", "glass-1"]
    for s in glass["collision_sites"] + chair["collision_sites"]:
        assert s["xy"] == pytest.approx(expected[s["episode_id"]], abs=1e-3)
    # The objects listed at a site are the ones the robot was driving into.
    for s, oid in zip(glass["collision_sites"], GLASS_DOORS):
        assert oid in [o["object_id"] for o in s["objects"]]
    for s, oid in zip(chair["collision_sites"], CHAIRS):
        assert oid in [o["object_id"] for o in s["objects"]]
    assert glass["skipped_episodes"][0]["episode_id"] == "timeout-0"
    assert regions_doc["outlier_episodes"] == 1


def test_semantic_match_picks_glass_for_a_glass_mode_not_chairs(regions_doc):
    glass, chair = regions_doc["modes"]
    glass_kinds = {s["object_class"] for s in glass["semantic_matches"]}
    chair_kinds = {s["object_class"] for s in chair["semantic_matches"]}
    assert "glass_door" in glass_kinds
    assert glass_kinds <= {"glass_door", "glass_partition"}
    assert "chair" in chair_kinds and not chair_kinds & {"glass_door", "glass_partition"}
    # Matches name every glass door of the building, not only the ones that were hit.
    door = next(s for s in glass["semantic_matches"] if s["object_class"] == "glass_door")
    assert set(GLASS_DOORS) < set(door["object_ids"][f"office_a-{BUILDING_SEED:06d}"])


def test_members_outvote_a_wrong_mode_name(failures, sim_config):
    """A weak model named a cluster of chair collisions "glass door": with
    semantic_source=members the explanations assigned to the mode decide the match."""
    root, _, taxonomy, _ = failures
    liar = {**taxonomy, "modes": [{**taxonomy["modes"][0], "count": 2, "frequency": 1.0}]}
    assignments = [{"episode_id": f"chair-{i}", "modes": ["transparent glass door"]}
                   for i in range(2)]
    explanations = {f"chair-{i}": "Collision with the chair (thin legs, low seat): hit "
                                  "head-on while driving toward it." for i in range(2)}
    kinds = {}
    for source in ("mode", "members"):
        doc = build_regions(liar, assignments, root, sim_config,
                            RegionsConfig(catalogue_buildings=1, semantic_source=source),
                            budget_samples=10, explanations=explanations)
        kinds[source] = {s["object_class"] for s in doc["modes"][0]["semantic_matches"]}
    assert "glass_door" in kinds["mode"]
    assert "chair" in kinds["members"] and not kinds["members"] & {"glass_door",
                                                                   "glass_partition"}


def test_budget_split_sums_to_B(regions_doc):
    assert sum(m["budget_samples"] for m in regions_doc["modes"]) == 1001
    glass, chair = regions_doc["modes"]
    assert glass["budget_samples"] > chair["budget_samples"]  # by frequency 0.6 / 0.4
    for arm, recs in regions_doc["regions"].items():
        assert sum(r["budget_samples"] for r in recs) == 1001, arm
        assert sum(r["share"] for r in recs) == pytest.approx(1.0)
    whys = {r["why"] for r in regions_doc["regions"]["targeted_collision"]}
    assert whys == {"collision_site"}
    whys = {r["why"] for r in regions_doc["regions"]["targeted_semantic"]}
    assert whys == {"collision_site", "semantic_match"}


@pytest.mark.parametrize("split", ["frequency", "equal", "sqrt_frequency"])
@pytest.mark.parametrize("total", [0, 1, 7, 1000, 40000])
def test_split_budget_exact(split, total):
    w = mode_weights([0.5, 0.25, 0.2, 0.05], split)
    parts = split_budget(total, w)
    assert sum(parts) == total and all(p >= 0 for p in parts)
    if split == "frequency" and total == 1000:
        assert parts == [500, 250, 200, 50]


def test_min_frequency_drops_rare_modes():
    w = mode_weights([0.7, 0.28, 0.02], "frequency", min_frequency=0.05)
    assert w[2] == 0 and sum(split_budget(99, w)) == 99


def test_arm_files_are_valid_nav_regions(regions_doc, sim_config):
    from nav_policy.regions import parse_regions, region_targets
    from sim.env import load_world
    from sim.query import MapQuery

    q = MapQuery(load_world(sim_config, "office_a", BUILDING_SEED))
    for arm in ("targeted_semantic", "targeted_collision"):
        regions = parse_regions(json.loads(json.dumps(arm_regions(regions_doc, arm))))
        assert regions
        for r in regions:
            assert region_targets(r, q), r.region_id


def test_region_mapping_never_opens_ground_truth(failures, sim_config, monkeypatch):
    root, _, taxonomy, assignments = failures
    opened = []
    real_open, real_io_open = builtins.open, io.open

    def guard(real):
        def _open(file, *a, **k):
            if "ground_truth" in str(file):
                opened.append(str(file))
                raise AssertionError(f"region mapping opened {file}")
            return real(file, *a, **k)
        return _open

    monkeypatch.setattr(builtins, "open", guard(real_open))
    monkeypatch.setattr(io, "open", guard(real_io_open))
    for name in ("read_text", "read_bytes", "open"):
        real = getattr(Path, name)

        def wrapped(self, *a, _real=real, **k):
            if "ground_truth" in self.name:
                opened.append(str(self))
                raise AssertionError(f"region mapping opened {self}")
            return _real(self, *a, **k)
        monkeypatch.setattr(Path, name, wrapped)
    doc = build_regions(taxonomy, assignments, root, sim_config,
                        RegionsConfig(catalogue_buildings=1), budget_samples=100)
    assert doc["modes"] and not opened


def test_no_usable_mode_is_a_clear_error(tmp_path, sim_config):
    taxonomy = {"modes": [{"name": "a", "description": "x", "keywords": [], "frequency": 1.0}]}
    with pytest.raises(ValueError, match="nothing to target"):
        build_regions(taxonomy, [{"episode_id": "missing", "modes": ["a"]}], tmp_path,
                      sim_config, RegionsConfig(catalogue_buildings=1,
                                                semantic_min_similarity=0.99),
                      budget_samples=10)


def test_loop_config_checks():
    with pytest.raises(ValueError, match="mining_set_seed"):
        LoopConfig.model_validate({"eval": {"mining_set_seed": 0, "eval_set_seed": 0}})
    with pytest.raises(ValueError, match="base.seed"):
        LoopConfig.model_validate({"seed": 0, "base": {"seed": 0}})
    with pytest.raises(ValueError):
        LoopConfig.model_validate({"arms": ["targeted_semantic", "nope"]})
    with pytest.raises(ValueError):
        LoopConfig.model_validate({"unknown_key": 1})


def test_presets_load():
    from loop.config import load_loop_config

    quick, full = load_loop_config("quick"), load_loop_config("full")
    assert quick.preset == "quick" and full.preset == "full"
    assert full.eval.in_distribution_rollouts >= 200 and full.budget_samples >= 10000
    with pytest.raises(ValueError, match="valid: "):
        load_loop_config("nonexistent")


# ---------------------------------------------------------------------- honest mode text
SENSOR_MODES = [  # what a taxonomy mined from robot logs says, and the kinds it means
    ("Unseen obstacle", "Collided with something the depth sensor did not see.",
     {"glass_door", "glass_partition"}),
    ("Thin object at range", "A thin object vanished from depth at range.", {"pole"}),
    ("Lost from view", "The obstacle left the camera's view on approach.", {"box", "bin"}),
    ("Corner clip", "Clipped a corner while turning.", {"pillar"}),
]


@pytest.fixture(scope="module")
def minilm():
    from failtax.embedding import EmbeddingConfig, make_text_embedder

    return make_text_embedder(EmbeddingConfig(kind="minilm"))


@pytest.fixture(scope="module")
def office_a_kinds(sim_config):
    from loop.regions import kind_catalogue

    return sorted(kind_catalogue(sim_config, "office_a", [BUILDING_SEED]))


@pytest.mark.parametrize("name,description,expected", SENSOR_MODES)
def test_sensor_phenomena_match_the_kinds_that_cause_them(name, description, expected, minilm,
                                                          office_a_kinds):
    """Mode text that speaks of what the sensors saw (no class name) finds the kind; with the
    old kind names ("glass door made of glass") and raw cosine it did not."""
    from loop.regions import semantic_matches

    rc = RegionsConfig()
    mode = [{"name": name, "description": description, "keywords": []}]
    best: list = []
    (found,) = semantic_matches(mode, office_a_kinds, minilm, rc.semantic_min_similarity,
                                rc.semantic_margin, rc.semantic_max_kinds, kind_style="sensor",
                                score="centred", best=best)
    assert found and found[0][0] in expected, found
    assert best[0]["object_class"] == found[0][0]


def test_old_kind_names_miss_the_unseen_obstacle(minilm, office_a_kinds):
    from loop.regions import semantic_matches

    name, description, expected = SENSOR_MODES[0]
    (found,) = semantic_matches([{"name": name, "description": description}], office_a_kinds,
                                minilm, 0.3, 0.15, 2, kind_style="name", score="cosine")
    assert not {c for c, _, _ in found} & expected


@pytest.mark.parametrize("text", ["The robot failed. Keywords: robot, failure",
                                  "The robot timed out waiting for the goal.",
                                  "The robot collided with an object close by."])
def test_vague_mode_text_matches_nothing_and_says_its_best(text, minilm, office_a_kinds):
    from loop.regions import semantic_matches

    rc = RegionsConfig()
    best: list = []
    (found,) = semantic_matches([{"name": "Failure", "description": text}], office_a_kinds,
                                minilm, rc.semantic_min_similarity, rc.semantic_margin,
                                rc.semantic_max_kinds, kind_style="sensor", score="centred",
                                best=best)
    assert found == []
    assert best[0]["similarity"] < rc.semantic_min_similarity


def _m(cls, mat="x"):
    return {"object_class": cls, "material": mat, "similarity": 0.3, "object_ids": {}}


def test_shuffle_moves_each_modes_kinds_to_another_mode():
    from loop.regions import shuffled_matches

    kinds = [("chair", "x"), ("glass_door", "x"), ("pole", "x"), ("wall", "x")]
    matches = [[_m("glass_door")], [], [_m("chair")], [_m("pole")]]
    out, info = shuffled_matches(matches, kinds, seed=3)
    assert info["method"] == "permutation" and info["unchanged_modes"] == 0
    assert out[1] == []  # a mode without matches stays collision-only: same budgets
    got = [[m["object_class"] for m in ms] for ms in out]
    assert sorted(map(tuple, got)) == sorted(map(tuple, [[m["object_class"] for m in ms]
                                                          for ms in matches]))
    assert all(g != [m["object_class"] for m in ms] for g, ms in zip(got, matches) if ms)
    assert shuffled_matches(matches, kinds, seed=3)[0] == out  # seeded


def test_shuffle_with_one_matched_mode_draws_other_kinds():
    from loop.regions import shuffled_matches

    kinds = [("chair", "x"), ("glass_door", "x"), ("pole", "x")]
    out, info = shuffled_matches([[_m("glass_door")], []], kinds, seed=0)
    assert info["method"] == "random_kinds"
    assert out[0][0]["object_class"] in {"chair", "pole"} and out[1] == []
    assert shuffled_matches([[], []], kinds, seed=0)[1]["method"] == "none"


def test_shuffled_arm_and_new_site_regions(failures, sim_config):
    from nav_policy.regions import parse_regions

    root, _, taxonomy, assignments = failures
    doc = build_regions(taxonomy, assignments, root, sim_config,
                        RegionsConfig(catalogue_buildings=1), budget_samples=1001,
                        family="office_a", site_family="office_b", shuffle_seed=0)
    glass, chair = doc["modes"]
    assert doc["shuffle"]["method"] == "permutation"
    # glass's kinds went to the chair mode and back: same budget, other targets
    assert {m["object_class"] for m in chair["shuffled_matches"]} == {
        m["object_class"] for m in glass["semantic_matches"]}
    shuffled = doc["regions"]["targeted_shuffled"]
    assert sum(r["budget_samples"] for r in shuffled) == 1001
    sem_chair = [r for r in shuffled if r["mode"] == chair["name"] and
                 r["why"] == "semantic_match"]
    assert sem_chair and all(r["object_class"].startswith("glass") for r in sem_chair)
    # the new site: the same modes matched against office_b's own kinds (its own materials)
    site = doc["regions"]["site_semantic"]
    assert sum(r["budget_samples"] for r in site) == 1001
    assert {r["family"] for r in site} == {"office_b"}
    assert any(r["object_class"] == "glass_door" and r["material"] == "tinted_glass"
               for r in site)
    assert parse_regions(arm_regions(doc, "site_semantic"))
