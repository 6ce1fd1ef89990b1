"""A labelled synthetic set of failure explanations, for tests and benchmarks.

Template sentences over the bundled simulator's hazard causes with paraphrased
objects, reasons, actions and sentence forms: realistic wording, but
template-made, so results on it are not results on real logs. Tests import it
as `from synthetic import make_synthetic_explanations` (pytest puts this
folder on the path); benchmarks/discovery_bench.py puts it there itself.
"""

from __future__ import annotations

import numpy as np

from common import derive_rng
from failtax.evaluation import Label
from failtax.types import Explanation

# Hazard causes of the bundled simulator, each with paraphrase material:
# (objects, why the camera missed it, what the robot did).
_SYNTHETIC_CAUSES: dict[str, tuple[list[str], list[str], list[str]]] = {
    "glass": (
        ["glass door", "glass wall", "transparent pane", "glazed partition", "window pane"],
        ["it is almost see-through", "the camera saw the room behind it", "it barely shows in the image",
         "its surface reflects the corridor", "nothing visible marked the pane"],
        ["drove straight ahead", "kept its speed", "entered the doorway", "crossed the lobby"],
    ),
    "thin_pole": (
        ["thin pole", "narrow post", "metal column", "lamp post", "slim pillar"],
        ["it is only a few pixels wide", "it vanished between image columns", "it is too thin to notice",
         "its width is tiny at that distance", "the policy ignored the narrow obstacle"],
        ["turned slightly left", "drove along the corridor", "cut the corner", "kept going forward"],
    ),
    "low_obstacle": (
        ["low box", "small crate", "low step", "cable tray on the floor", "short obstacle"],
        ["it sits below the camera's view", "it is lower than the camera looks", "it hid under the field of view",
         "the camera points over it", "it is too low to appear until too late"],
        ["moved forward", "approached the desk", "drove toward the goal", "passed the shelf"],
    ),
    "plain_wall": (
        ["plain white wall", "featureless wall", "blank wall", "uniform grey wall", "bare wall"],
        ["it has no texture to judge distance", "the uniform surface hid how close it was",
         "nothing on it showed the approach", "its flat colour gave no depth cue", "the wall looked far away"],
        ["drove toward the end of the hall", "turned into the room", "accelerated", "headed to the goal"],
    ),
    "narrow_gap": (
        ["narrow gap", "tight doorway", "small opening between desks", "narrow passage", "gap between cabinets"],
        ["it was narrower than the robot", "the robot misjudged the clearance", "its sides clipped the frame",
         "the opening was too tight to pass", "the policy aimed through a gap that did not fit"],
        ["tried to pass through", "squeezed between obstacles", "steered into the opening", "drove on"],
    ),
    "chair": (
        ["office chair", "chair", "stool", "desk chair", "swivel chair"],
        ["its legs are thin and spread out", "it stood in the walking path", "its shape changes with the angle",
         "it was moved into the aisle", "the seat hid the legs below"],
        ["crossed the office", "drove between desks", "went around a table", "moved toward the window"],
    ),
    "corner": (
        ["wall corner", "sharp corner", "corner of the corridor", "edge of a wall", "protruding corner"],
        ["it turned too early", "the corner was at the edge of the view", "the robot cut the turn",
         "the corner left the field of view while turning", "it misjudged the turning radius"],
        ["turned right", "turned left", "rounded the corner", "took the bend"],
    ),
}
_SYNTHETIC_FORMS = [
    "The robot {act} and hit the {obj} because {why}.",
    "Collision with a {obj}: {why}.",
    "It {act}, then collided with the {obj}; {why}.",
    "The robot failed to avoid the {obj} since {why}.",
    "While it {act}, the robot crashed into a {obj} as {why}.",
    "Hit a {obj}. Likely cause: {why}.",
]


def make_synthetic_explanations(n: int, seed: int = 0) -> tuple[list[Explanation], dict[str, Label]]:
    """A labelled synthetic set of failure explanations and their labels.

    Built from templates over the simulator's hazard causes with paraphrased
    objects, reasons, actions and sentence forms, plus 10% of explanations
    that mention a second, irrelevant object — realistic wording, but
    template-made: results on it are not results on real logs. Seeded.
    """
    rng = derive_rng(seed, "synthetic-explanations")
    causes = list(_SYNTHETIC_CAUSES)
    weights = np.linspace(2.0, 1.0, len(causes))
    weights = weights / weights.sum()
    explanations: list[Explanation] = []
    labels: dict[str, Label] = {}
    for i in range(n):
        cause = causes[int(rng.choice(len(causes), p=weights))]
        objs, whys, acts = _SYNTHETIC_CAUSES[cause]
        obj, why, act = (str(rng.choice(objs)), str(rng.choice(whys)), str(rng.choice(acts)))
        text = str(rng.choice(_SYNTHETIC_FORMS)).format(obj=obj, why=why, act=act)
        if rng.random() < 0.1:
            other = causes[int(rng.integers(len(causes)))]
            text += f" A {rng.choice(_SYNTHETIC_CAUSES[other][0])!s} was also nearby."
        eid = f"syn-{i:06d}"
        explanations.append(Explanation(eid, f"The robot {act}.", text, "given", None))
        labels[eid] = Label(cause, f"The robot collided with a {objs[0]} because {whys[0]}.")
    return explanations, labels
