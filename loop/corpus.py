"""A multi-operator corpus of crash reports over the simulator's hidden causes.

Real incident databases are written by several operators, each with its own
template, vocabulary, length and boilerplate (fleet name, site code, ticket id,
legal footer in every report), and each fleet hits its own mix of hazards. A
clustering that groups such reports by *who wrote them* looks plausible and is
useless; this corpus makes that failure measurable.

Per episode the generator draws the facts a log would hold (hidden cause from
`sim.building.CAUSE_CLASSES`, speed at impact, whether the robot braked, where
it was, the obstacle's size), then one operator writes it up. No operator names
every cause by the simulator's class name; one (``cobalt``) describes only what
was observed. Operators are balanced in count but not independent of cause.

    failtax corpus out/ --reports 900 --seed 0
    failtax discover out/reports.jsonl --set discovery.use_model_names=false

Writes ``reports.jsonl`` (the ``given`` explanations format: episode_id,
failure_reason) and ``labels.csv`` (episode_id, cause, operator), both
deterministic in the seed. This is the composition root's business: it reads
simulator ground truth, which ``failtax/`` never does.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from common import derive_rng
from sim.building import CAUSE_CLASSES

# The hazards written up (all simulator cause classes; furniture/plain_wall are left out:
# they overlap "chair"/"wall" in words and would blur the labels).
CAUSES: tuple[str, ...] = ("glass", "thin_pole", "low_obstacle", "chair", "wall", "corner", "narrow_gap")
REPORTS_FILE = "reports.jsonl"
LABELS_FILE = "labels.csv"


@dataclass(frozen=True)
class Facts:
    """What the logs of one episode say (the writer sees these, never the class name)."""

    episode_id: str
    cause: str
    speed_mps: float  # speed at contact
    braked: bool  # the robot slowed down before contact
    turning: bool  # the robot was rotating at contact
    place: str  # where it happened
    size_m: float  # cause-dependent size: panel width, pole diameter, box height, gap width, ...
    minutes: int  # minutes into the mission


# Cause-dependent dynamics: (speed range m/s, braking probability, turning probability, size range m).
_DYNAMICS: dict[str, tuple[tuple[float, float], float, float, tuple[float, float]]] = {
    "glass": ((0.7, 1.2), 0.05, 0.1, (0.8, 2.5)),
    "thin_pole": ((0.5, 1.0), 0.15, 0.2, (0.02, 0.06)),
    "low_obstacle": ((0.4, 0.9), 0.1, 0.2, (0.1, 0.3)),
    "chair": ((0.3, 0.7), 0.5, 0.3, (0.4, 0.6)),
    "wall": ((0.2, 0.6), 0.7, 0.2, (2.0, 6.0)),
    "corner": ((0.2, 0.5), 0.4, 0.9, (0.1, 0.4)),
    "narrow_gap": ((0.1, 0.4), 0.6, 0.4, (0.45, 0.7)),
}
_PLACES = ("corridor", "lobby", "office", "storage room", "kitchen", "meeting room")


def draw_facts(episode_id: str, cause: str, seed: int) -> Facts:
    """The facts of one episode, seeded by (seed, episode_id)."""
    (lo, hi), p_brake, p_turn, (s_lo, s_hi) = _DYNAMICS[cause]
    rng = derive_rng(seed, episode_id, "facts")
    braked = bool(rng.random() < p_brake)
    speed = float(rng.uniform(lo, hi)) * (0.6 if braked else 1.0)
    return Facts(
        episode_id=episode_id, cause=cause, speed_mps=round(speed, 2), braked=braked,
        turning=bool(rng.random() < p_turn), place=str(rng.choice(_PLACES)),
        size_m=round(float(rng.uniform(s_lo, s_hi)), 2), minutes=int(rng.integers(2, 90)),
    )


# --------------------------------------------------------------------------- operators


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return str(options[int(rng.integers(len(options)))])


def _northwind(f: Facts, rng: np.random.Generator) -> str:
    """Terse ticket lines, technical nouns, always the same header and footer."""
    obj = {
        "glass": ("glass partition", "glazed panel", "transparent partition", "glass door"),
        "thin_pole": ("thin pole", "slender post", "narrow steel rod", "sign post"),
        "low_obstacle": ("low obstacle", "floor-level box", "box below sensor height", "low bin"),
        "chair": ("chair", "office chair", "swivel seat"),
        "wall": ("wall", "plain wall", "painted wall"),
        "corner": ("wall corner", "pillar edge", "corner"),
        "narrow_gap": ("narrow gap", "tight passage", "constriction between fixtures"),
    }[f.cause]
    verb = _pick(rng, ("struck", "contacted", "collided with", "hit"))
    lines = [
        f"Ticket NWL-{rng.integers(100000, 999999)} | Site NW-{rng.integers(10, 99)} | Fleet: Northwind AMR-3",
        f"Summary: unit {verb} {_pick(rng, obj)} at {f.speed_mps:.2f} m/s in {f.place}.",
    ]
    if rng.random() < 0.6:
        lines.append(f"Brake: {'engaged' if f.braked else 'not engaged'}. Rotation: {'yes' if f.turning else 'no'}.")
    lines.append(f"Mission time: {f.minutes} min.")
    lines.append("Northwind Logistics confidential - internal use only.")
    return "\n".join(lines)


_HELIOS_FOOTER = ("This record was produced under Helios clinical safety procedure CSP-4 and must not be shared "
                  "outside the organisation.")


def _helios(f: Facts, rng: np.random.Generator) -> str:
    """Long clinical narrative, sentence order varies, hospital vocabulary."""
    obj = {
        "glass": ("a glass door", "a clear glass screen", "a window pane"),
        "thin_pole": ("an IV drip stand", "a coat stand pole", "a thin metal stand"),
        "low_obstacle": ("a linen basket left on the floor", "a low box", "a footstool-height crate"),
        "chair": ("a visitor chair", "an armchair", "a bedside chair"),
        "wall": ("the corridor wall", "the ward wall", "a wall"),
        "corner": ("the corner of a doorframe", "a corner at the junction", "the edge of a pillar"),
        "narrow_gap": ("a gap between two beds", "the space between two carts", "a narrow opening"),
    }[f.cause]
    place = {"corridor": "the ward corridor", "lobby": "the reception area", "office": "the nurses' office",
             "storage room": "the supply room", "kitchen": "the pantry", "meeting room": "the day room"}[f.place]
    core = [
        f"While delivering medication in {place}, the robot made contact with {_pick(rng, obj)}.",
        f"It was travelling at roughly {f.speed_mps:.1f} m/s and "
        + ("had started to slow down." if f.braked else "did not reduce speed before the contact."),
        "The robot was rotating at the time." if f.turning else "The robot was moving in a straight line.",
    ]
    extra = [
        "No patient was involved and no injury was reported.",
        "A member of staff repositioned the robot and it resumed its route.",
        "The delivery was delayed by a few minutes.",
        "Nursing staff were informed of the event.",
    ]
    rng.shuffle(core)
    body = core + [extra[i] for i in rng.permutation(len(extra))[: int(rng.integers(1, 4))]]
    return " ".join([
        f"Helios Care Robotics incident record HC-{rng.integers(10000, 99999)}, "
        + f"ward {rng.integers(1, 12)}{_pick(rng, 'ABC')}.",
        *body,
        f"Logged {f.minutes} minutes into the shift.",
        _HELIOS_FOOTER,
    ])


def _cobalt(f: Facts, rng: np.random.Generator) -> str:
    """Observations only: never names the object class, says what was seen."""
    obs = {
        "glass": ("the panel was see-through", "the room behind was visible through the thing in the way",
                  "depth readings passed straight through the surface", "the surface reflected the shop lights"),
        "thin_pole": ("the object was only a few centimetres wide", "a single vertical rod stood in the path",
                      "the object barely showed up in the depth image"),
        "low_obstacle": ("the object was below the height of the front sensor",
                         "something knee-high sat on the floor in the path",
                         "nothing was visible at sensor height before the bump"),
        "chair": ("the object had four legs and a backrest", "the object had a seat and legs with open space between them",
                  "a piece of seating furniture had been moved into the aisle"),
        "wall": ("a flat vertical surface filled the view", "the surface ahead was blank and uniform",
                 "the robot drove square into a solid flat surface"),
        "corner": ("the contact was on the side while rotating around an edge",
                   "the robot clipped an edge while turning", "the side bumper caught a protruding edge"),
        "narrow_gap": ("the opening was narrower than the robot", "both sides of the robot touched at once",
                       "the robot tried to pass between two objects with little room"),
    }[f.cause]
    pick = [obs[i] for i in rng.permutation(len(obs))[:2]]
    lines = [f"COBALT RETAIL ROBOTICS - store {rng.integers(100, 999)}",
             *(f"- Observation: {o}." for o in pick),
             f"- The robot {'slowed down' if f.braked else 'did not slow down'}; speed {f.speed_mps:.2f} m/s.",
             "Report auto-generated by Cobalt FleetView 2.3. (c) Cobalt Retail Ltd. All rights reserved."]
    return "\n".join(lines)


def _quay(f: Facts, rng: np.random.Generator) -> str:
    """Informal, lower case, warehouse slang, short."""
    obj = {
        "glass": ("the office window", "a perspex screen", "the clear screen by the office"),
        "thin_pole": ("a rack upright", "a skinny post", "a metal pole"),
        "low_obstacle": ("a tote on the floor", "a pallet", "a crate left on the floor"),
        "chair": ("a stool", "someone's chair", "a folding chair"),
        "wall": ("the end wall", "the blockwork wall", "a wall"),
        "corner": ("the corner of a rack", "the end of an aisle", "a corner"),
        "narrow_gap": ("a tight aisle", "a squeeze point between pallets", "a gap too small for it"),
    }[f.cause]
    first = f"bot ran into {_pick(rng, obj)} near dock {rng.integers(1, 20)}."
    rest = [f"speed was about {f.speed_mps:.1f}.", "it didnt stop." if not f.braked else "it tried to stop.",
            "was turning." if f.turning else ""]
    rng.shuffle(rest)
    return " ".join(
        [f"[QWS-{rng.integers(1000, 9999)}]", first, *(r for r in rest if r),
         f"-- quay warehouse systems, shift {_pick(rng, 'ABC')}. sent from fleet console"]
    )


@dataclass(frozen=True)
class Operator:
    """One writer of reports: a template and the mix of causes its fleet hits."""

    name: str
    write: Callable[[Facts, np.random.Generator], str]
    cause_weights: dict[str, float]  # relative frequency of each cause in this fleet


def _mix(heavy: tuple[str, ...]) -> dict[str, float]:
    return {c: (4.0 if c in heavy else 1.0) for c in CAUSES}


# Each fleet hits its own hazards more often (glass offices, hospitals full of stands, ...),
# so grouping by operator partly agrees with cause: the tempting wrong answer.
OPERATORS: tuple[Operator, ...] = (
    Operator("northwind", _northwind, _mix(("glass", "wall"))),
    Operator("helios", _helios, _mix(("thin_pole", "narrow_gap"))),
    Operator("cobalt", _cobalt, _mix(("chair", "low_obstacle"))),
    Operator("quay", _quay, _mix(("corner", "low_obstacle"))),
)


@dataclass(frozen=True)
class Report:
    episode_id: str
    text: str
    cause: str
    operator: str


def make_corpus(num_reports: int = 900, *, num_operators: int = 3, seed: int = 0) -> list[Report]:
    """`num_reports` reports, balanced over the first `num_operators` operators.

    Deterministic in `seed`. Raises ValueError for an operator count outside 1..4.
    """
    if not 1 <= num_operators <= len(OPERATORS):
        raise ValueError(f"num_operators={num_operators}; choose 1..{len(OPERATORS)}")
    unknown = set(CAUSES) - set(CAUSE_CLASSES)
    if unknown:  # the simulator renamed a cause class: keep the corpus in step with it
        raise ValueError(f"causes {sorted(unknown)} are not simulator cause classes {CAUSE_CLASSES}")
    reports: list[Report] = []
    ops = OPERATORS[:num_operators]
    for i in range(num_reports):
        op = ops[i % len(ops)]
        eid = f"ep{i:05d}"
        rng = derive_rng(seed, eid, "corpus")
        w = np.array([op.cause_weights[c] for c in CAUSES])
        cause = CAUSES[int(rng.choice(len(CAUSES), p=w / w.sum()))]
        facts = draw_facts(eid, cause, seed)
        reports.append(Report(eid, op.write(facts, derive_rng(seed, eid, "write")), cause, op.name))
    # Shuffle so the file order says nothing about the operator.
    order = derive_rng(seed, "order").permutation(len(reports))
    return [reports[i] for i in order]


def write_corpus(reports: list[Report], out_dir: Path) -> tuple[Path, Path]:
    """Write reports.jsonl (given explanations) and labels.csv atomically; returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rep_path, lab_path = out_dir / REPORTS_FILE, out_dir / LABELS_FILE
    tmp = rep_path.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"episode_id": r.episode_id, "failure_reason": r.text}, sort_keys=True) + "\n"
                     for r in reports)
    os.replace(tmp, rep_path)
    tmp = lab_path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["episode_id", "cause", "operator"])
        for r in reports:
            w.writerow([r.episode_id, r.cause, r.operator])
    os.replace(tmp, lab_path)
    return rep_path, lab_path


@click.command("corpus")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--reports", "num_reports", default=900, show_default=True, help="Number of reports.")
@click.option("--operators", "num_operators", default=3, show_default=True, type=click.IntRange(1, len(OPERATORS)),
              help="Number of operators writing them (balanced).")
@click.option("--seed", default=0, show_default=True, help="Seed (the corpus is deterministic in it).")
def corpus(out_dir: Path, num_reports: int, num_operators: int, seed: int) -> None:
    """Write a multi-operator crash-report corpus over the simulator's hidden causes:
    OUT_DIR/reports.jsonl (given explanations) and OUT_DIR/labels.csv (cause, operator)."""
    reports = make_corpus(num_reports, num_operators=num_operators, seed=seed)
    rep, lab = write_corpus(reports, out_dir)
    click.echo(f"wrote {len(reports)} reports by {num_operators} operators to {rep} (labels: {lab})")
