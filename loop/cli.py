"""The umbrella `failtax` command line (the installed entry point).

It lists the robot-agnostic pipeline commands of `failtax.cli` and the bundled
robot's commands (simulator, navigation policy, closed loop). Every command is
imported only when invoked, so `failtax --help` stays instant.
"""

from __future__ import annotations

import click

from failtax.cli import COMMANDS as PIPELINE_COMMANDS
from failtax.cli import LazyGroup

COMMANDS: dict[str, tuple[str, str]] = {
    **PIPELINE_COMMANDS,
    "sim": ("sim.cli:sim", "Bundled indoor-navigation simulator: sample images, maps, episodes."),
    "nav": ("nav_policy.cli:nav", "Navigation policy: collect expert data, train, evaluate."),
    "close-loop": ("loop.commands:close_loop", "Evaluate → discover → collect in failure regions → retrain → evaluate."),
    "monitor": ("loop.safeguard:monitor", "Runtime failure monitor: evaluate, train, episode sets, safeguard in the simulator."),
    "corpus": ("loop.corpus:corpus", "Write a multi-operator crash-report corpus with cause labels (sim ground truth)."),
}


class UmbrellaGroup(LazyGroup):
    commands_table = COMMANDS


@click.group(cls=UmbrellaGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="failtax")
def main() -> None:
    """failtax: turn robot failure logs into an interpretable failure taxonomy,
    with self-hosted models, and close the loop back into the policy.

    Typical use: `failtax serve embedded` (or point at your own vLLM server),
    then `failtax discover EPISODES --config configs/pipeline/default.yaml`.
    `failtax COMMAND --help` explains each command.
    """


if __name__ == "__main__":
    main()
