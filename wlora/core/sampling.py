"""Stratified subsampling of a training set by label (LoRA-drop's importance sample, §3.1).

Pure python on a list of labels, so the data layer can use it without the method knowing the data.
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable, Sequence


def stratified_sample(labels: Sequence[Hashable], ratio: float, seed: int = 0) -> list[int]:
    """Indices of a ``ratio`` fraction of the examples, drawn per label (sorted ascending).

    Each label class c contributes ``round(ratio · |c|)`` examples (at least one), drawn uniformly
    with a seeded RNG, so the sample keeps the label distribution. Regression targets should be
    binned by the caller first (e.g. STS-B scores rounded to integers).

    Raises:
        ValueError: ``ratio`` outside (0, 1] or no labels.
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"`ratio` must be in (0, 1], got {ratio!r}")
    if not labels:
        raise ValueError("cannot sample from an empty label list")
    by_class: dict[Hashable, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    rng = random.Random(seed)
    picked: list[int] = []
    for key in sorted(by_class, key=repr):  # a fixed class order, whatever the label type
        idx = by_class[key]
        k = min(len(idx), max(1, math.floor(ratio * len(idx) + 0.5)))
        picked.extend(rng.sample(idx, k))
    return sorted(picked)
