"""The shipped YAML presets, one folder per component (package data, values only).

`common.resolve_preset` finds them wherever the package is installed:
`resolve_preset("quick", "loop")` is configs/loop/quick.yaml, and the
repository paths written in docs and presets (`configs/sim/nav.yaml`) resolve
to the shipped copy from any working directory.
"""
