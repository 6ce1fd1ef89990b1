"""Small helpers every failtax package shares: atomic files, stable hashes,
derived RNGs and strict YAML-backed configs.

This package is a leaf: it imports nothing else from the project (it only
reads the shipped YAML presets of the `configs` data package), so `sim`,
`serving`, `nav_policy` and `failtax` may all use it without breaking the
one-way import arrows of docs/DESIGN.md.
"""

from common.config import (
    StrictModel,
    apply_overrides,
    dump_yaml,
    load_yaml,
    parse_sets,
    preset_names,
    resolve_preset,
    set_option,
)
from common.fileio import (
    append_jsonl,
    atomic_dir,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    read_jsonl,
    repair_torn_tail,
)
from common.hashing import derive_rng, derive_seed, stable_hash

__all__ = [
    "StrictModel",
    "append_jsonl",
    "apply_overrides",
    "atomic_dir",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "derive_rng",
    "derive_seed",
    "dump_yaml",
    "load_yaml",
    "parse_sets",
    "preset_names",
    "read_jsonl",
    "repair_torn_tail",
    "resolve_preset",
    "set_option",
    "stable_hash",
]
