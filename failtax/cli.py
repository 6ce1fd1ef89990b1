"""The robot-agnostic `failtax` commands and the lazy group that lists them.

Subcommands live next to the code they drive and are imported only when
invoked, so `failtax --help` is instant and `failtax discover` never imports
torch training code. The installed `failtax` entry point is the umbrella group
of `loop.cli`, which lists these commands plus the bundled simulator, policy and
closed-loop ones; this module names no robot package (`python -m failtax.cli`
runs the robot-agnostic commands alone).
"""

from __future__ import annotations

import importlib

import click

# name -> "module:attribute" of a click command; imported on first use.
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("serving.cli:serve", "Start (or attach to) a model server from a recipe or a local model folder."),
    "convert": ("failtax.convert:convert", "Robot logs (LeRobot, ROS 2 MCAP, dashcam, manipulation runs) to the episode format."),
    "discover": ("failtax.commands:discover", "Episodes in, failure taxonomy and assignments out (a run folder)."),
    "assign": ("failtax.commands:assign", "Assign episodes of a run (or new ones) to an existing taxonomy."),
    "evaluate": ("failtax.commands:evaluate", "Score a run against ground-truth cause labels."),
    "report": ("failtax.commands:report", "Rebuild summary.md and report.html of a run."),
    "batch": ("failtax.batch.cli:batch", "Cluster batch runs: model calls as vLLM batch files (local, SLURM, Ray), imported."),
    "compare": ("failtax.compare:compare", "Run several reasoners on the same failures and compare them."),
    "monitor": ("failtax.monitor.cli:monitor", "Runtime failure monitor: evaluate monitors (taxonomy, baselines) on episodes."),
}


class LazyGroup(click.Group):
    """A click group over a `name -> ("module:attribute", help)` table, imported on use."""

    commands_table: dict[str, tuple[str, str]] = COMMANDS

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.commands_table)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands_table:
            return None
        target, _ = self.commands_table[name]
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            raise click.ClickException(
                f"`failtax {name}` needs {e.name!r}, which is not installed; run `bash scripts/setup.sh`"
            ) from e
        return getattr(module, attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help without importing every subcommand's module.
        rows = [(name, self.commands_table[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="failtax")
def main() -> None:
    """failtax (pipeline commands only): turn robot failure logs into an
    interpretable failure taxonomy, with self-hosted models.

    Typical use: `failtax serve embedded` (or point at your own vLLM server),
    then `failtax discover EPISODES --config configs/pipeline/default.yaml`.
    `failtax COMMAND --help` explains each command.
    """


if __name__ == "__main__":
    main()
