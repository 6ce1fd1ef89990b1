"""The composition root: the one package that joins the two towers.

`failtax/` (the robot-agnostic pipeline) and `nav_policy/` → `sim/` (the bundled
robot) never import each other; they meet here. This package holds the closed
loop (failure taxonomy → regions → targeted expert data → fine-tune → evaluate:
`run_loop` in loop.run, `build_regions` in loop.regions) and the umbrella
`failtax` command line (loop.cli), which registers every command.
"""
