"""Gate-based adapter selection shared by WeightLoRA and WeightLoRA+ (WeightLoRA paper §3.3–3.4).

Stage machinery: with ``stages = S`` and final K, stage s (s = 1..S) trains the gates by StoIHT with
``K_s = K · 2^(S−s)`` for T steps and ends at optimizer step ``s·T``: the gates are ranked, the
adapters outside the top-``K_s`` are physically removed, and :meth:`GatedSelection.on_stage_end`
runs (WeightLoRA+ grows ranks there). After the last stage the gates are frozen by folding them into
the adapters' scale. WeightLoRA is the case S = 1.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from wlora.core.config import GateConfig
from wlora.core.controller import Controller
from wlora.core.gates import GateSGD, gate_scores, topk_indices


class GatedSelection(Controller):
    """Gated adapters + StoIHT + staged removal. Subclasses set ``slug`` and may override
    :meth:`on_stage_end`."""

    uses_gates = True

    def __init__(self, model: nn.Module, config: GateConfig, stages: int = 1):
        super().__init__(model, config)
        self.k = config.resolve_k(self.n_adapters)
        self.stages = stages
        #: Adapters kept at the end of each stage: K·2^(S−1), ..., 2K, K.
        self.k_stages = [self.k * 2 ** (stages - s) for s in range(1, stages + 1)]
        if self.k_stages[0] > self.n_adapters:
            raise ValueError(
                f"`k` · 2^(stages−1) must be <= n_adapters={self.n_adapters} so every stage can halve K, "
                f"got k={self.k}, stages={stages}"
            )
        self.sgd = GateSGD(self.layers, config.lr_w, config.topk_by)
        #: Stages completed (0 .. S); selection is final when it equals S.
        self.stage = 0
        #: Gate projections actually applied (steps with ∇ω = 0 are skipped).
        self.projections = 0
        #: Per stage: {module name: score of its gate at selection} for every adapter ranked.
        self.selection_scores: list[dict[str, float]] = []
        #: This stage's gate updates lr_w·∇ω, one row per applied step (the batch-to-batch spread).
        self.updates: list[list[float]] = []
        #: This stage's decision so far: the last step whose top-K set changed, and the K-th − (K+1)-th
        #: score gap right after it; then, per stage, the decision with its margin (see :meth:`decision`).
        self.pending: dict[str, Any] | None = None
        self.decisions: list[dict[str, Any]] = []

    @property
    def selected(self) -> bool:
        return self.stage >= self.stages

    def current_k(self) -> int:
        return self.k_stages[min(self.stage, self.stages - 1)]

    def kept_adapters(self) -> dict[str, int]:
        """While the gates train: the adapters whose gate is non-zero after the last projection."""
        if self.selected:
            return super().kept_adapters()
        nonzero = (self.sgd.values() != 0).tolist()
        return {n: int(layer.r) for (n, layer), nz in zip(self.layers.items(), nonzero, strict=True) if nz}

    def on_train_begin(self, optimizer: torch.optim.Optimizer) -> None:
        # T = 0: nothing trains the gates, so every stage ends before the first step. The ranking is
        # then by adapter order (all gates tie at 1) — a fixed selection, documented in the config.
        while self.config.t == 0 and not self.selected:
            self._end_stage(optimizer)

    def before_optimizer_step(self, step: int, lr_scale: float = 1.0) -> None:
        if self.selected:
            return
        scale = lr_scale if self.config.lr_w_scheduled else 1.0
        start = self.config.projection_start
        project = start is not None and step >= start
        before = self.sgd.values()
        update = self.sgd.step(self.current_k(), scale, project=project)
        if update is None:
            return
        self.projections += int(project)
        self.updates.append(update.tolist())
        self._observe_decision(step, before - update)

    def _observe_decision(self, step: int, candidate: torch.Tensor) -> None:
        """Track when this stage's top-K set (of the step's candidate ω − lr_w·∇ω, before projection) last
        changed, and the gap between its K-th and (K+1)-th scores right then."""
        k = self.current_k()
        order = topk_indices(candidate, len(candidate), self.config.topk_by).tolist()
        top = sorted(order[:k])
        if self.pending is not None and self.pending["top"] == top:
            return
        scores = gate_scores(candidate, self.config.topk_by)
        gap = float(scores[order[k - 1]] - scores[order[k]]) if k < len(order) else None
        self.pending = {
            "step": int(step),
            "top": top,
            "gap": gap,
            "pair": [order[k - 1], order[min(k, len(order) - 1)]],
        }

    def decision(self) -> dict[str, Any] | None:
        """The last stage's decision: ``step`` (the last optimizer step whose top-K set changed), ``gap``
        (the K-th minus the (K+1)-th gate score right after it), ``spread`` (the standard deviation over
        the stage's steps of the difference of those two adapters' updates lr_w·∇ω: how much one batch
        moves their order) and ``margin`` = gap / spread. A margin below 1 means one batch's noise could
        have flipped the choice."""
        return self.decisions[-1] if self.decisions else None

    def _close_decision(self) -> None:
        pending, self.pending = self.pending, None
        updates, self.updates = self.updates, []
        if pending is None:  # no gate ever moved (T = 0, or ∇ω = 0 throughout): selection by adapter order
            self.decisions.append({"step": 0, "gap": None, "spread": None, "margin": None, "steps": 0})
            return
        i, j = pending["pair"]
        diffs = [u[i] - u[j] for u in updates]
        spread = float(torch.tensor(diffs).std()) if len(diffs) >= 2 else None
        gap = pending["gap"]
        margin = gap / spread if gap is not None and spread else None
        self.decisions.append(
            {"step": pending["step"], "gap": gap, "spread": spread, "margin": margin, "steps": len(updates)}
        )

    def metrics(self) -> dict[str, float]:
        d = self.decision()
        if d is None:
            return {}
        out = {"selection_decision_step": float(d["step"])}
        for key in ("margin", "gap", "spread"):
            if d[key] is not None:
                out[f"selection_{key}"] = float(d[key])
        return out

    def after_optimizer_step(self, step: int, optimizer: torch.optim.Optimizer) -> None:
        if not self.selected and step >= (self.stage + 1) * self.config.t:
            self._end_stage(optimizer)

    def _end_stage(self, optimizer: torch.optim.Optimizer | None) -> None:
        names = list(self.layers)
        values = self.sgd.values()
        keep_idx = topk_indices(values, self.current_k(), self.config.topk_by).tolist()
        self._close_decision()
        scores = gate_scores(values, self.config.topk_by)
        self.selection_scores.append({n: float(scores[i]) for i, n in enumerate(names)})
        # Survivors ordered by score (most important first): the order growth hands out spare rank.
        survivors = [names[i] for i in keep_idx]
        kept = set(survivors)
        self.remove_adapters([n for n in names if n not in kept], optimizer)
        self.stage += 1
        if self.selected:
            for layer in self.layers.values():
                layer.drop_gate(fold=True)  # freeze ω: s ← s·ω, the gate parameter is deleted
        self.on_stage_end(survivors, optimizer)

    def on_stage_end(self, survivors: list[str], optimizer: torch.optim.Optimizer | None) -> None:
        """Hook after a stage's removal (and, after the last stage, gate folding)."""

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(stage=self.stage, projections=self.projections, selection_scores=self.selection_scores)
        state.update(updates=self.updates, pending=self.pending, decisions=self.decisions)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.stage = int(state["stage"])
        self.projections = int(state["projections"])
        self.selection_scores = [dict(s) for s in state["selection_scores"]]
        self.updates = [list(u) for u in state.get("updates", [])]
        self.pending = state.get("pending")
        self.decisions = [dict(d) for d in state.get("decisions", [])]

    def report(self) -> dict[str, Any]:
        out = super().report()
        out.update(
            k=self.k,
            selected=self.selected,
            stage=self.stage,
            projections=self.projections,
            selected_adapters=list(self.layers) if self.selected else [],
            selection_scores=self.selection_scores[-1] if self.selection_scores else {},
            decision=self.decision(),
        )
        if not self.selected:
            out["gates"] = {n: float(v) for n, v in zip(self.layers, self.sgd.values(), strict=True)}
        return out
