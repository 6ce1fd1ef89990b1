"""`failtax compare`: several reasoners on the same failures, side by side."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from common import set_option


@click.command()
@click.argument("episodes", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--reasoner",
    "reasoners",
    multiple=True,
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A reasoner YAML, or a shipped one by name (configs/reasoners/*.yaml, e.g. "
         "`embedded`); give two or more.",
)
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    default=None,
    help="Shared pipeline YAML (or shipped preset name): source, key-frame selection, scene descriptions, cache, seed.",
)
@click.option(
    "--run-dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Comparison folder; an existing one is resumed (cached calls are not redone).",
)
@set_option(
    "Override a shared config value, e.g. --set source.max_episodes=100 (repeatable).",
    name="sets",
)
@click.option(
    "--match-threshold",
    type=float,
    default=None,
    help="Cosine similarity at which two modes count as the same (default 0.6).",
)
@click.option(
    "--least-agreeing",
    type=int,
    default=None,
    help="Least-agreeing episodes listed per pair (default 5).",
)
@click.option(
    "--embedder",
    type=click.Choice(["minilm", "hashing"]),
    default="minilm",
    show_default=True,
    help="Text embedder for comparing explanations and modes (hashing: lexical, no weights).",
)
@click.option(
    "--labels",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Expert labels CSV (episode_id,label[,reason]); default: the episodes' ground_truth.json.",
)
@click.option(
    "--report-only",
    is_flag=True,
    help="Recompute the comparison from the sub-runs already in --run-dir; no model calls.",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("-v", "--verbose", is_flag=True, help="Log each stage's start and finish.")
def compare(
    episodes,
    reasoners,
    config,
    run_dir,
    sets,
    match_threshold,
    least_agreeing,
    embedder,
    labels,
    report_only,
    quiet,
    verbose,
):
    """Run several reasoners on the same failures and compare them.

    Key frames are selected once and shared; each reasoner then runs
    reasoning, discovery and assignment in its own sub-run folder
    (RUN_DIR/reasoners/NAME, resumable like `failtax discover`), all through
    one call cache. The comparison covers explanations (per-episode
    similarity, least-agreeing episodes), taxonomies (modes matched one to
    one, modes one reasoner missed), assignments (ARI, confusion through the
    matching), ground-truth metrics when the episodes have them, and cost
    (calls, tokens, time, parse failures, money per 1,000 episodes).

    Writes RUN_DIR/comparison.json, comparison.md and comparison.html.
    A reasoner whose backend.api_key_env is unset is refused before any work.

    Example:

    \b
        failtax compare episodes/ --run-dir runs/cmp \\
            --reasoner configs/reasoners/embedded.yaml \\
            --reasoner configs/reasoners/hosted_openai.yaml
    """
    from failtax.compare.config import CompareConfig
    from failtax.compare.run import CompareRun
    from failtax.config import load_config

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from failtax.embedding import EmbeddingConfig

    settings: dict[str, object] = {"embedding": EmbeddingConfig(kind=embedder)}
    if match_threshold is not None:
        settings["match_threshold"] = match_threshold
    if least_agreeing is not None:
        settings["least_agreeing_episodes"] = least_agreeing
    try:
        base = load_config(config, sets)
        run = CompareRun(
            base,
            list(reasoners),
            Path(run_dir),
            episodes=episodes,
            settings=CompareConfig(**settings),
            labels=labels,
            progress=not quiet,
        )
    except ValueError as e:  # bad config, duplicate names, a missing API key: nothing has run
        raise click.UsageError(str(e)) from None
    try:
        if report_only:
            missing = [s.name for s in run.specs if not run.sub_run(s).is_dir()]
            if missing:
                raise click.UsageError(
                    f"--report-only: no sub-run for {missing} in {run_dir}; run without it first"
                )
            comparison = run.compare()
        else:
            comparison = run.run()
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    from failtax.compare.report import md_table, pair_rows, summary_rows

    click.echo(md_table(*summary_rows(comparison)))
    click.echo("")
    click.echo(md_table(*pair_rows(comparison)))
    calls = (comparison.get("this_invocation") or {}).get("model_calls")
    if calls is not None:
        click.echo(f"\nmodel calls made now (not from the cache): {calls}")
    click.echo(f"report: {Path(run_dir) / 'comparison.md'} and comparison.html")
