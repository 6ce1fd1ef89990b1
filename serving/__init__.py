"""Model serving for failtax: recipes, a managed vLLM launcher, one client for
any OpenAI-compatible endpoint, an in-process transformers backend, and the
on-disk call cache. Everything here knows nothing of failure analysis.

Entry point: `make_backend(BackendConfig(...))` returns an `LLMBackend`
(serving.protocol). Heavy dependencies (httpx, torch, transformers) are
imported only when a backend is made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from serving.protocol import BackendError, CallResult, LLMBackend, Usage

if TYPE_CHECKING:
    from serving.config import BackendConfig

__all__ = ["BackendConfig", "BackendError", "CallResult", "LLMBackend", "Usage", "make_backend"]


def make_backend(config: BackendConfig | None = None) -> LLMBackend:
    """Build the backend `config` describes (see serving.factory.make_backend)."""
    from serving.factory import make_backend as _make

    return _make(config)


def __getattr__(name: str):
    if name == "BackendConfig":
        from serving.config import BackendConfig

        return BackendConfig
    raise AttributeError(f"module 'serving' has no attribute {name!r}")
