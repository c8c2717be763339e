"""Search dimensions every method shares (WeightLoRA paper §4 grids).

Keys equal config field names (``wlora.train.TrainConfig`` or the method's config), so a sampled
dict goes straight to ``TrainConfig.from_flat``.
"""

from __future__ import annotations

from ray import tune

#: Peak AdamW learning rate; the paper's grid spans 1e-6 .. 5e-3.
LR = tune.loguniform(1e-6, 5e-3)
#: Linear warm-up steps; the paper's grid.
WARMUP_STEPS = tune.choice([0, 20, 50, 70, 100, 200])
#: Adapter rank r (fixed per sweep cell when ``--ranks`` is given).
RANK = tune.choice([1, 2, 4, 8, 16])

#: The paper's lr × warm-up grid (``--search grid`` / ``presets/paper_grid.yaml``).
PAPER_LR_GRID = [1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3]
PAPER_WARMUP_GRID = [0, 20, 50, 70, 100, 200]

COMMON = {"lr": LR, "warmup_steps": WARMUP_STEPS}
ADAPTER = {**COMMON, "r": RANK}
