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
``--style realistic`` writes like public incident databases instead: templates
whose fields change in every report (dates, times, unit ids, streets, speeds,
case numbers), each operator's own name for the robot inside the content
sentences, one operator with almost no boilerplate, operators of unequal size.

    failtax corpus out/ --reports 900 --seed 0 [--style realistic]
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


_OBJ_NORTHWIND: dict[str, tuple[str, ...]] = {
    "glass": ("glass partition", "glazed panel", "transparent partition", "glass door"),
    "thin_pole": ("thin pole", "slender post", "narrow steel rod", "sign post"),
    "low_obstacle": ("low obstacle", "floor-level box", "box below sensor height", "low bin"),
    "chair": ("chair", "office chair", "swivel seat"),
    "wall": ("wall", "plain wall", "painted wall"),
    "corner": ("wall corner", "pillar edge", "corner"),
    "narrow_gap": ("narrow gap", "tight passage", "constriction between fixtures"),
}


def _northwind(f: Facts, rng: np.random.Generator) -> str:
    """Terse ticket lines, technical nouns, always the same header and footer."""
    obj = _OBJ_NORTHWIND[f.cause]
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


_OBJ_HELIOS: dict[str, tuple[str, ...]] = {
    "glass": ("a glass door", "a clear glass screen", "a window pane"),
    "thin_pole": ("an IV drip stand", "a coat stand pole", "a thin metal stand"),
    "low_obstacle": ("a linen basket left on the floor", "a low box", "a footstool-height crate"),
    "chair": ("a visitor chair", "an armchair", "a bedside chair"),
    "wall": ("the corridor wall", "the ward wall", "a wall"),
    "corner": ("the corner of a doorframe", "a corner at the junction", "the edge of a pillar"),
    "narrow_gap": ("a gap between two beds", "the space between two carts", "a narrow opening"),
}


def _helios_core(f: Facts, rng: np.random.Generator, *, robot: str, pronoun: str) -> list[str]:
    """Helios's content sentences (what was hit, speed, turning), naming the robot `robot`."""
    place = {"corridor": "the ward corridor", "lobby": "the reception area", "office": "the nurses' office",
             "storage room": "the supply room", "kitchen": "the pantry", "meeting room": "the day room"}[f.place]
    return [
        f"While delivering medication in {place}, {robot} made contact with {_pick(rng, _OBJ_HELIOS[f.cause])}.",
        f"{pronoun} was travelling at roughly {f.speed_mps:.1f} m/s and "
        + ("had started to slow down." if f.braked else "did not reduce speed before the contact."),
        f"{robot[0].upper()}{robot[1:]} was rotating at the time." if f.turning
        else f"{robot[0].upper()}{robot[1:]} was moving in a straight line.",
    ]


def _helios(f: Facts, rng: np.random.Generator) -> str:
    """Long clinical narrative, sentence order varies, hospital vocabulary."""
    core = _helios_core(f, rng, robot="the robot", pronoun="It")
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


_OBS_COBALT: dict[str, tuple[str, ...]] = {
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
}


def _cobalt(f: Facts, rng: np.random.Generator) -> str:
    """Observations only: never names the object class, says what was seen."""
    obs = _OBS_COBALT[f.cause]
    pick = [obs[i] for i in rng.permutation(len(obs))[:2]]
    lines = [f"COBALT RETAIL ROBOTICS - store {rng.integers(100, 999)}",
             *(f"- Observation: {o}." for o in pick),
             f"- The robot {'slowed down' if f.braked else 'did not slow down'}; speed {f.speed_mps:.2f} m/s.",
             "Report auto-generated by Cobalt FleetView 2.3. (c) Cobalt Retail Ltd. All rights reserved."]
    return "\n".join(lines)


_OBJ_QUAY: dict[str, tuple[str, ...]] = {
    "glass": ("the office window", "a perspex screen", "the clear screen by the office"),
    "thin_pole": ("a rack upright", "a skinny post", "a metal pole"),
    "low_obstacle": ("a tote on the floor", "a pallet", "a crate left on the floor"),
    "chair": ("a stool", "someone's chair", "a folding chair"),
    "wall": ("the end wall", "the blockwork wall", "a wall"),
    "corner": ("the corner of a rack", "the end of an aisle", "a corner"),
    "narrow_gap": ("a tight aisle", "a squeeze point between pallets", "a gap too small for it"),
}


def _quay(f: Facts, rng: np.random.Generator) -> str:
    """Informal, lower case, warehouse slang, short."""
    obj = _OBJ_QUAY[f.cause]
    first = f"bot ran into {_pick(rng, obj)} near dock {rng.integers(1, 20)}."
    rest = [f"speed was about {f.speed_mps:.1f}.", "it didnt stop." if not f.braked else "it tried to stop.",
            "was turning." if f.turning else ""]
    rng.shuffle(rest)
    return " ".join(
        [f"[QWS-{rng.integers(1000, 9999)}]", first, *(r for r in rest if r),
         f"-- quay warehouse systems, shift {_pick(rng, 'ABC')}. sent from fleet console"]
    )


# --------------------------------------------------------------------------- realistic operators
# Modelled on public incident databases (e.g. autonomous-vehicle collision narratives): each
# operator fills its own template with fields that change in every report (dates, times, unit
# ids, streets and sites, speeds, case numbers), calls its robot by its own name inside the
# content sentences ("the Northwind AMR", "the courier", "AGV 17"), writes at its own length,
# and the operators differ in size. One (``cobalt``) writes free text with almost no boilerplate.

_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December")
_STREETS = ("Harbour Road", "Mill Lane", "King Street", "Station Way", "Queen's Parade", "Foundry Row",
            "Canal Street", "Market Hill", "Abbey Road", "Granary Wharf")
_CITIES = ("Leeds", "Bristol", "Rotterdam", "Lyon", "Hamburg", "Glasgow", "Utrecht", "Antwerp")
_WARDS = ("Rowan", "Cedar", "Maple", "Willow", "Juniper", "Hawthorn", "Aspen")
_STAFF = ("J. Patel", "M. Okafor", "S. Lindqvist", "R. Alvarez", "K. Nowak", "T. Brennan", "L. Moreau")


def _date(rng: np.random.Generator) -> str:
    return f"{_pick(rng, _MONTHS)} {int(rng.integers(1, 29))}, {int(rng.integers(2024, 2027))}"


def _clock(rng: np.random.Generator) -> str:
    return f"{int(rng.integers(1, 13))}:{int(rng.integers(0, 60)):02d} {_pick(rng, ('AM', 'PM'))}"


def _northwind_real(f: Facts, rng: np.random.Generator) -> str:
    """Collision-narrative style: a templated opening sentence mixing fields with the event,
    the unit called "the Northwind AMR" throughout, a templated closing with varying fields."""
    unit = f"NW-{int(rng.integers(100, 999))}"
    verb = _pick(rng, ("made contact with", "struck", "collided with"))
    parts = [
        (f"On {_date(rng)} at {_clock(rng)}, a Northwind AMR ({unit}) operating in autonomous mode was "
        f"travelling {_pick(rng, ('north', 'south', 'east', 'west'))}bound along {_pick(rng, _STREETS)} "
        f"in the {_pick(rng, _CITIES)} depot at {f.speed_mps:.1f} m/s when the Northwind AMR {verb} "
        f"{_pick(rng, _OBJ_NORTHWIND[f.cause])}."),
    ]
    if rng.random() < 0.7:
        parts.append("The Northwind AMR " + ("braked before the contact." if f.braked
                                             else "did not brake before the contact."))
    if f.turning and rng.random() < 0.7:
        parts.append("The Northwind AMR was turning at the time.")
    parts.append(f"The Northwind AMR sustained {_pick(rng, ('minor', 'no', 'cosmetic'))} damage and "
                 f"{_pick(rng, ('no injuries were reported', 'nobody was hurt'))}.")
    parts.append(f"Case {unit}-{int(rng.integers(1000, 9999))} was closed by the {_pick(rng, _CITIES)} "
                 "site supervisor.")
    return " ".join(parts)


def _helios_real(f: Facts, rng: np.random.Generator) -> str:
    """Long clinical record: a header of fields, the robot called "the courier", sentence order
    varies, a reviewer line and a confidentiality line with varying procedure numbers."""
    core = _helios_core(f, rng, robot="the courier", pronoun="The courier")
    extra = [
        "No patient was involved and no injury was reported.",
        f"{_pick(rng, _STAFF)} repositioned the courier and it resumed its route.",
        f"The delivery to {_pick(rng, _WARDS)} Ward was delayed by {int(rng.integers(2, 15))} minutes.",
        "Nursing staff were informed of the event.",
    ]
    rng.shuffle(core)
    body = core + [extra[i] for i in rng.permutation(len(extra))[: int(rng.integers(1, 4))]]
    return " ".join([
        (f"Incident HC-{int(rng.integers(10000, 99999))}, {_pick(rng, _WARDS)} Ward, "
        f"{_pick(rng, _CITIES)} General, {_date(rng)}."),
        *body,
        f"Reviewed by {_pick(rng, _STAFF)} on {_date(rng)}.",
        f"Confidential under Helios procedure CSP-{int(rng.integers(1, 9))}.",
    ])


def _cobalt_real(f: Facts, rng: np.random.Generator) -> str:
    """Free text with almost no boilerplate: what the staff saw, in a sentence or two."""
    subject = _pick(rng, ("The robot", "Our bot", "The floor robot", "It"))
    obs = [_OBS_COBALT[f.cause][i] for i in rng.permutation(len(_OBS_COBALT[f.cause]))[: int(rng.integers(1, 3))]]
    verb = _pick(rng, ("bumped into something", "hit an object", "ran into a thing", "knocked into something",
                       "had a collision", "stopped after a bump"))
    where = _pick(rng, (f"in aisle {int(rng.integers(1, 30))}", "near the tills", "by the freezers",
                        "at the back of the shop", "next to the entrance", "in the stock room"))
    lines = [_pick(rng, (f"{subject} {verb} {where}: {obs[0]}.", (f"{subject[0].upper()}{subject[1:]} {verb}, "
                         f"{obs[0]}."), f"{obs[0][0].upper()}{obs[0][1:]} when {subject.lower()} {verb} {where}."))]
    if len(obs) > 1:
        lines.append(obs[1][0].upper() + obs[1][1:] + ".")
    if rng.random() < 0.5:
        lines.append("It slowed down first." if f.braked else f"No slowing down, about {f.speed_mps:.1f} m/s.")
    return " ".join(lines)


def _quay_real(f: Facts, rng: np.random.Generator) -> str:
    """Terse field list, a vehicle number for a name, a short description line."""
    agv = f"AGV {int(rng.integers(1, 40))}"
    fields = [
        f"Date: {int(rng.integers(2024, 2027))}-{int(rng.integers(1, 13)):02d}-{int(rng.integers(1, 29)):02d}",
        f"Time: {int(rng.integers(0, 24)):02d}:{int(rng.integers(0, 60)):02d}",
        f"Vehicle: {agv}",
        f"Location: Dock {int(rng.integers(1, 20))}, {_pick(rng, _CITIES)}",
        f"Speed: {f.speed_mps:.1f} m/s",
    ]
    desc = f"Description: {agv} ran into {_pick(rng, _OBJ_QUAY[f.cause])}"
    desc += "; tried to stop." if f.braked else "; did not stop."
    return " | ".join(fields) + "\n" + desc + f"\nRef QWS-{int(rng.integers(1000, 9999))}. Status: closed."


@dataclass(frozen=True)
class Operator:
    """One writer of reports: a template and the mix of causes its fleet hits."""

    name: str
    write: Callable[[Facts, np.random.Generator], str]
    cause_weights: dict[str, float]  # relative frequency of each cause in this fleet
    write_realistic: Callable[[Facts, np.random.Generator], str]  # the operator's realistic template
    realistic_share: float  # relative number of reports in the realistic corpus (operators differ in size)


def _mix(heavy: tuple[str, ...]) -> dict[str, float]:
    return {c: (4.0 if c in heavy else 1.0) for c in CAUSES}


# Each fleet hits its own hazards more often (glass offices, hospitals full of stands, ...),
# so grouping by operator partly agrees with cause: the tempting wrong answer.
OPERATORS: tuple[Operator, ...] = (
    Operator("northwind", _northwind, _mix(("glass", "wall")), _northwind_real, 0.4),
    Operator("helios", _helios, _mix(("thin_pole", "narrow_gap")), _helios_real, 0.25),
    Operator("cobalt", _cobalt, _mix(("chair", "low_obstacle")), _cobalt_real, 0.2),
    Operator("quay", _quay, _mix(("corner", "low_obstacle")), _quay_real, 0.15),
)
STYLES = ("classic", "realistic")


@dataclass(frozen=True)
class Report:
    episode_id: str
    text: str
    cause: str
    operator: str


def make_corpus(num_reports: int = 900, *, num_operators: int = 3, seed: int = 0,
                style: str = "classic") -> list[Report]:
    """`num_reports` reports by the first `num_operators` operators.

    `style` "classic": each operator's fixed template, operators balanced in count.
    "realistic": templates with fields that vary per report, the operator's own name for
    the robot inside the content sentences, one operator with almost no boilerplate, and
    operators of unequal size (`Operator.realistic_share`). The hidden causes and the
    facts of each episode are the same in both styles.

    Deterministic in `seed`. Raises ValueError for an operator count outside 1..4 or an
    unknown style.
    """
    if not 1 <= num_operators <= len(OPERATORS):
        raise ValueError(f"num_operators={num_operators}; choose 1..{len(OPERATORS)}")
    if style not in STYLES:
        raise ValueError(f"style={style!r}; choose one of {', '.join(STYLES)}")
    unknown = set(CAUSES) - set(CAUSE_CLASSES)
    if unknown:  # the simulator renamed a cause class: keep the corpus in step with it
        raise ValueError(f"causes {sorted(unknown)} are not simulator cause classes {CAUSE_CLASSES}")
    reports: list[Report] = []
    ops = OPERATORS[:num_operators]
    shares = np.cumsum([op.realistic_share for op in ops])
    for i in range(num_reports):
        if style == "classic":
            op = ops[i % len(ops)]
        else:  # contiguous blocks in proportion to the shares (the file order is shuffled below)
            op = ops[min(int(np.searchsorted(shares, (i + 0.5) / num_reports * shares[-1])), len(ops) - 1)]
        write = op.write if style == "classic" else op.write_realistic
        eid = f"ep{i:05d}"
        rng = derive_rng(seed, eid, "corpus")
        w = np.array([op.cause_weights[c] for c in CAUSES])
        cause = CAUSES[int(rng.choice(len(CAUSES), p=w / w.sum()))]
        facts = draw_facts(eid, cause, seed)
        reports.append(Report(eid, write(facts, derive_rng(seed, eid, "write")), cause, op.name))
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
              help="Number of operators writing them.")
@click.option("--seed", default=0, show_default=True, help="Seed (the corpus is deterministic in it).")
@click.option("--style", type=click.Choice(STYLES), default="classic", show_default=True,
              help="classic: fixed templates, balanced operators. realistic: templates with varying fields "
              "(dates, ids, places, speeds), each operator's own name for the robot, one operator with almost "
              "no boilerplate, operators of unequal size.")
def corpus(out_dir: Path, num_reports: int, num_operators: int, seed: int, style: str) -> None:
    """Write a multi-operator crash-report corpus over the simulator's hidden causes:
    OUT_DIR/reports.jsonl (given explanations) and OUT_DIR/labels.csv (cause, operator)."""
    reports = make_corpus(num_reports, num_operators=num_operators, seed=seed, style=style)
    rep, lab = write_corpus(reports, out_dir)
    click.echo(f"wrote {len(reports)} reports by {num_operators} operators to {rep} (labels: {lab})")
