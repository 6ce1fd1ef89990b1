"""The closed loop: failure taxonomy → regions → targeted expert data → fine-tune → evaluate.

The only package that imports both `failtax` (the robot-agnostic pipeline) and
`nav_policy` (the robot). Entry points: `run_loop` (nav_policy.loop.run),
`build_regions` (nav_policy.loop.regions), `failtax close-loop` (cli.py).
"""
