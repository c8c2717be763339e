"""The one Pareto definition of the sweep: task score (higher is better) against the share of the base model
trained besides the task head (``method_pct``, lower is better; the papers' "# Params"), used by
``--multi-objective``, the cells' fronts in the state and the report's plot alike."""

from __future__ import annotations

from collections.abc import Sequence

#: Secondary objective of ``--multi-objective`` (minimised) and the Pareto fronts: the share of the
#: base model trained besides the task head (which every method trains), as the papers count # Params.
PARAMS_METRIC = "method_pct"


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points when fewer parameters (x) and a higher metric (y) are
    better: no other point has x' ≤ x and y' ≥ y with one strict. Sorted by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best_y = [], float("-inf")
    for i in order:
        if points[i][1] > best_y:
            front.append(i)
            best_y = points[i][1]
    return front
