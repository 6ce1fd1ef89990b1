"""Stable content hashes and RNGs derived from (seed, item, purpose)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np


def stable_hash(obj: Any, *, length: int = 16) -> str:
    """Hex digest of a JSON-serialisable object (bytes are hashed raw).

    Dict key order does not matter; the same content always gives the same key,
    across processes and machines. Used for cache keys and file fingerprints.
    """
    h = hashlib.sha256()
    if isinstance(obj, (bytes, bytearray, memoryview)):
        h.update(bytes(obj))
    else:
        h.update(json.dumps(obj, sort_keys=True, ensure_ascii=False, default=_default).encode())
    return h.hexdigest()[:length]


def derive_seed(seed: int, *parts: Any) -> int:
    """A 63-bit seed for one item and purpose, e.g. derive_seed(0, "ep17", "starts")."""
    return int(stable_hash([int(seed), *map(str, parts)], length=16), 16) & ((1 << 63) - 1)


def derive_rng(seed: int, *parts: Any) -> np.random.Generator:
    """An independent numpy Generator per (seed, item, purpose)."""
    return np.random.default_rng(derive_seed(seed, *parts))


def _default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "model_dump"):
        return o.model_dump(mode="json")
    return str(o)
