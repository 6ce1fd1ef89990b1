"""`failtax compare`: several reasoners (local or hosted models, prompts, sampling) on the
same failures, compared on explanations, taxonomies, assignments, ground truth and cost.

`failtax.compare.run.CompareRun` drives a comparison; `failtax.compare.metrics` holds the
comparison's arithmetic; `failtax.compare.report` renders comparison.md and .html.
"""

from failtax.compare.cli import compare

__all__ = ["compare"]
