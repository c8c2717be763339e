"""ROLoRA: rank optimisation for LoRA under a strict memory budget (ROLoRA paper, Algorithm 1).

Per adapter ``ΔW_i = B_i diag(g_i) A_i`` (:class:`RankGatedLoRALinear`), ranks ``r_i`` with the
budget (paper eq. 3)

    Σ_i r_i ≤ n · R                                            — checked in every hook, every step

Start: r_i = R (plain LoRA, g = 1). The run's ``total_steps`` steps are split into T outer iterations
(near-equal, iteration t ends at step ⌊t·total_steps/T⌋). Iteration t (Algorithm 1, lines 4–9):

1. SPARSIFY (line 5; the paper uses AdaLoRA as the operator, §6): train the current configuration
   while pruning gate entries exactly like AdaLoRA's RankAllocator, with the iteration's own clock
   τ = 1..L: sensitivity ``I = |w·∇w|`` of every entry of A, B, g, smoothed ``Ī ← β1 Ī + (1−β1) I``
   and uncertainty ``Ū ← β2 Ū + (1−β2)|I − Ī|`` (AdaLoRA eqs. 8–9); component score
   ``S_j = s(g_j) + mean_k s(A_jk) + mean_k s(B_kj)``, ``s = Ī·Ū`` (AdaLoRA eq. 10; ``score="gate"``
   keeps s(g_j) only). Budget: the current total Σ r_i for τ ≤ t_init, then AdaLoRA's cubic decay
   ``b(τ) = b_T + (b_0 − b_T)(1 − (τ − t_init)/(L − t_final − t_init))³`` to the target
   ``b_T = round(n·μ_t)``, keeping the b(τ) best-scored entries every ``delta_t`` steps and setting the
   other g_j to 0; at τ = L − t_final the final mask is fixed and re-applied after every later step.
   Result: trial ranks ``s_i`` = unmasked entries of module i.
2. Rescale (line 6): ``s_i ← round(s_i · R / mean(s))``, then capped so Σ s_i ≤ n·R (the largest
   s_i give one back at a time).
3. Frank-Wolfe step (line 7): ``r_i ← round((1 − γ) r_i + γ s_i)``, γ = 1/t, then re-capped to the
   budget, taking back first from the modules whose new rank exceeds their trial rank the most.
4. EXTEND (line 8): the unmasked components (A rows, g entries, B columns) are carried with their
   trained values and AdamW moments; pruned ones (g_j = 0) are dropped; ranks above the carried
   count get new components initialised like LoRA (A row Kaiming-uniform, B column 0, g_j = 1), so
   ``B diag(g) A`` — and the model output — is unchanged. Since Σ s_i ≤ n·μ_t < n·R, the cap never
   has to cut below the carried count; if it ever did, the highest-scored components are kept.
5. SCHEDULE (line 9): μ_1 = ``sparsify_start``·R (paper: R/2), ``μ_{t+1} = μ_t (1 + 1/(T + t))``.

Ranks only change at EXTEND (tensors are masked, not resized, while sparsifying), so the allocated
ranks always satisfy the budget; the scale s = α / R is never recomputed.

Left open by the paper, decided here: the length of a SPARSIFY run (the steps are split evenly
between the T iterations instead of T full trainings); AdaLoRA's t_i / t_f as fractions
``tinit_frac`` / ``tfinal_frac`` of each iteration; the rounding (half up) and the order in which the
caps take rank back; no orthogonality regulariser (A, B are LoRA factors here, not AdaLoRA's
singular vectors); the sensitivity is also updated at the step that fixes the final mask. The last
EXTEND (t = T) happens at the final step; ``ranks`` reports the returned configuration r^(T) and
``output_ranks`` the trial ranks s^(T) of the last SPARSIFY (the paper's "output rank", Table 4);
``active_ranks`` counts the unpruned components right now.
Steps beyond ``total_steps`` train the final configuration without pruning.

Hooks: ``after_optimizer_step`` (sensitivity, masks, iteration end), ``before_optimizer_step`` (budget
check). Call order as peft's RankAllocator: after ``optimizer.step()``, before ``zero_grad()``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from wlora.core.controller import Controller
from wlora.core.optim import reindex_param_
from wlora.methods.rolora.config import RoLoRAConfig
from wlora.methods.rolora.layer import RankGatedLoRALinear


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def _cap(values: list[int], budget: int, priority: list[float]) -> list[int]:
    """Take one unit at a time from the entry with the highest ``priority − taken`` (then the
    largest value, then the first) until ``sum(values) ≤ budget``."""
    out = list(values)
    slack = list(priority)
    while sum(out) > budget:
        i = max((j for j in range(len(out)) if out[j] > 0), key=lambda j: (slack[j], out[j], -j))
        out[i] -= 1
        slack[i] -= 1
    return out


class RoLoRAController(Controller):
    slug = "rolora"
    layer_cls = RankGatedLoRALinear

    def __init__(self, model: nn.Module, config: RoLoRAConfig):
        super().__init__(model, config)
        #: The strict budget n·R on Σ r_i.
        self.budget = self.n_adapters * config.r
        self.ends = config.iteration_ends()
        #: Current outer iteration t (1-based); T + 1 once all are done.
        self.iteration = 1
        #: μ_t: target average rank of the current SPARSIFY.
        self.mu = config.sparsify_start * config.r
        #: The fixed final mask of the current iteration (set at τ = L − t_final), per module.
        self.mask: dict[str, torch.Tensor] | None = None
        #: Smoothed sensitivity Ī and uncertainty Ū per module and tensor ("A", "B", "g").
        self.ema: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
        #: One record per finished iteration: trial ranks, rescaled, new ranks, γ, μ.
        self.history: list[dict[str, Any]] = []
        #: Masking events so far (the pruning really happened).
        self.prunes = 0
        self.check_budget()

    # ----- budget -----

    def used_rank(self) -> int:
        return sum(layer.r for layer in self.layers.values())

    def check_budget(self) -> None:
        """Raise if the allocated ranks exceed n·R (the paper's hard constraint, eq. 3)."""
        used = self.used_rank()
        if used > self.budget:
            raise RuntimeError(f"ROLoRA budget violated: Σ r_i = {used} > n·R = {self.budget}")

    # ----- hooks -----

    def before_optimizer_step(self, step: int, lr_scale: float = 1.0) -> None:
        self.check_budget()

    def after_optimizer_step(self, step: int, optimizer: torch.optim.Optimizer) -> None:
        self.check_budget()
        if self.iteration > self.config.iterations:
            return  # all T iterations done: train the returned configuration
        start = self.ends[self.iteration - 2] if self.iteration > 1 else 0
        length = self.ends[self.iteration - 1] - start
        tau = step - start
        t_init, t_final = self.config.phase_lengths(length)
        if tau < length - t_final:
            self._update_scores()
            if tau > t_init and tau % self.config.delta_t == 0:
                b0, target = self.used_rank(), self.target_total()
                coeff = 1 - (tau - t_init) / (length - t_final - t_init)
                self._mask_to(int((b0 - target) * coeff**3 + target))
        elif tau == length - t_final:
            self._update_scores()
            self.mask = self._mask_to(self.target_total())
        else:
            self._apply_mask(self.mask)
        if tau == length:
            self._end_iteration(optimizer)
        self.check_budget()

    # ----- SPARSIFY -----

    def target_total(self) -> int:
        """b_T = round(n·μ_t), never above the current total."""
        return min(self.used_rank(), _round_half_up(self.n_adapters * self.mu))

    def _tensors(self, layer: RankGatedLoRALinear) -> dict[str, nn.Parameter]:
        if self.config.score == "gate":
            return {"g": layer.lora_g}
        return {"A": layer.lora_A, "B": layer.lora_B, "g": layer.lora_g}

    @torch.no_grad()
    def _update_scores(self) -> None:
        b1, b2 = self.config.beta1, self.config.beta2
        for name, layer in self.layers.items():
            slots = self.ema.setdefault(name, {})
            for key, p in self._tensors(layer).items():
                grad = p.grad if p.grad is not None else torch.zeros_like(p)
                ipt = (p.detach() * grad).abs().float()
                avg, unc = slots.get(key, (torch.zeros_like(ipt), torch.zeros_like(ipt)))
                avg = b1 * avg + (1 - b1) * ipt
                unc = b2 * unc + (1 - b2) * (ipt - avg).abs()
                slots[key] = (avg, unc)

    def component_scores(self) -> dict[str, torch.Tensor]:
        """Per module, the AdaLoRA importance of each rank component (length r_i)."""
        out = {}
        for name, layer in self.layers.items():
            slots = self.ema.get(name)
            if not slots:
                out[name] = torch.zeros(layer.r, device=layer.lora_g.device)
                continue
            score = slots["g"][0] * slots["g"][1]
            if self.config.score == "triplet":
                score = score + (slots["A"][0] * slots["A"][1]).mean(dim=1)
                score = score + (slots["B"][0] * slots["B"][1]).mean(dim=0)
            out[name] = score
        return out

    @torch.no_grad()
    def _mask_to(self, budget: int) -> dict[str, torch.Tensor]:
        """Keep the ``budget`` best-scored gate entries over all modules, zero the other g_j."""
        scores = self.component_scores()
        flat = torch.cat([scores[n] for n in self.layers])
        keep = torch.zeros_like(flat, dtype=torch.bool)
        order = torch.sort(flat, descending=True, stable=True).indices  # ties: model order
        keep[order[: max(0, budget)]] = True
        mask, i = {}, 0
        for name, layer in self.layers.items():
            mask[name] = keep[i : i + layer.r].clone()
            i += layer.r
        self._apply_mask(mask)
        self.prunes += 1
        return mask

    @torch.no_grad()
    def _apply_mask(self, mask: dict[str, torch.Tensor] | None) -> None:
        if mask is None:
            return
        for name, layer in self.layers.items():
            layer.lora_g.masked_fill_(~mask[name].to(layer.lora_g.device), 0.0)

    # ----- rescale, Frank-Wolfe, extend -----

    def _end_iteration(self, optimizer: torch.optim.Optimizer | None) -> None:
        t, R, names = self.iteration, self.config.r, list(self.layers)
        assert self.mask is not None
        trial = [int(self.mask[n].sum()) for n in names]
        mean = sum(trial) / len(trial)
        rescaled = [_round_half_up(s * R / mean) for s in trial] if mean > 0 else list(trial)
        rescaled = _cap(rescaled, self.budget, [float(v) for v in rescaled])
        gamma = 1.0 / t
        old = [self.layers[n].r for n in names]
        new = [_round_half_up((1 - gamma) * r + gamma * s) for r, s in zip(old, rescaled, strict=True)]
        new = _cap(new, self.budget, [float(r - s) for r, s in zip(new, trial, strict=True)])
        scores = self.component_scores()
        for name, r_new in zip(names, new, strict=True):
            self._extend(self.layers[name], r_new, self.mask[name], scores[name], optimizer)
        self.history.append({"t": t, "gamma": gamma, "mu": self.mu, "trial": trial, "rescaled": rescaled, "ranks": new})
        self.mu *= 1 + 1 / (self.config.iterations + t)
        self.iteration += 1
        self.mask = None
        self.ema = {}

    @torch.no_grad()
    def _extend(
        self,
        layer: RankGatedLoRALinear,
        r_new: int,
        mask: torch.Tensor,
        score: torch.Tensor,
        optimizer: torch.optim.Optimizer | None,
    ) -> None:
        active = torch.nonzero(mask.cpu(), as_tuple=False).flatten()
        if len(active) > r_new:  # only if a cap cut below the carried count: keep the best-scored
            best = torch.sort(score.cpu()[active], descending=True, stable=True).indices[:r_new]
            active = torch.sort(active[best]).values
        fresh = r_new - len(active)
        A, B, g = layer.lora_A.detach(), layer.lora_B.detach(), layer.lora_g.detach()
        bound = 1.0 / math.sqrt(layer.in_features)  # LoRA's A init (kaiming_uniform, a=√5)
        noise = torch.rand(fresh, layer.in_features, generator=self.generator, dtype=torch.float64)
        src = active.to(A.device)
        A_new = torch.cat([A.index_select(0, src), (noise * (2 * bound) - bound).to(A)], dim=0)
        B_new = torch.cat([B.index_select(1, src), B.new_zeros(B.shape[0], fresh)], dim=1)
        g_new = torch.cat([g.index_select(0, src), g.new_ones(fresh)])
        dst = torch.arange(len(active))
        reindex_param_(layer.lora_A, A_new, 0, active, dst, optimizer)
        reindex_param_(layer.lora_B, B_new, 1, active, dst, optimizer)
        reindex_param_(layer.lora_g, g_new, 0, active, dst, optimizer)
        layer.r = r_new

    # ----- export / state / report -----

    def export_factors(self) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
        """``(A, B diag(g), s)`` without the pruned components (g_j = 0 contributes nothing)."""
        out = {}
        for name, layer in self.layers.items():
            A, Bg, scale = layer.effective_factors()
            keep = layer.lora_g.detach() != 0
            out[name] = (A[keep], Bg[:, keep], scale)
        return out

    def active_ranks(self) -> dict[str, int]:
        """Unpruned components per module (the fixed mask's count, else g_j ≠ 0)."""
        if self.mask is not None:
            return {n: int(m.sum()) for n, m in self.mask.items()}
        return {n: int((layer.lora_g.detach() != 0).sum()) for n, layer in self.layers.items()}

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(
            iteration=self.iteration,
            mu=self.mu,
            mask=None if self.mask is None else {n: m.clone() for n, m in self.mask.items()},
            ema={n: {k: (a.clone(), u.clone()) for k, (a, u) in s.items()} for n, s in self.ema.items()},
            history=[dict(h) for h in self.history],
            prunes=self.prunes,
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.iteration = int(state["iteration"])
        self.mu = float(state["mu"])
        self.mask = None if state["mask"] is None else {n: m.clone() for n, m in state["mask"].items()}
        self.ema = {n: {k: (a.clone(), u.clone()) for k, (a, u) in s.items()} for n, s in state["ema"].items()}
        self.history = [dict(h) for h in state["history"]]
        self.prunes = int(state["prunes"])
        self.check_budget()

    def report(self) -> dict[str, Any]:
        out = super().report()
        ranks = out["ranks"]
        out.update(
            target_rank=self.config.r,
            budget=self.budget,
            rank_sum=self.used_rank(),
            mean_rank=sum(ranks.values()) / max(1, len(ranks)),
            active_ranks=self.active_ranks(),
            # s^(T) of the last finished SPARSIFY: the paper's "output rank" (Table 4)
            output_ranks=dict(zip(self.layers, self.history[-1]["trial"], strict=True)) if self.history else {},
            iteration=min(self.iteration, self.config.iterations),
            iterations_done=len(self.history),
            prunes=self.prunes,
            history=self.history,
        )
        return out
