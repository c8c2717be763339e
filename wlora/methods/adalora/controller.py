"""AdaLoRA (Zhang et al., 2023) through peft: ``AdaLoraModel`` + its ``RankAllocator``.

Per module ``ΔW = P Λ Q`` (peft: ``B diag(E) A``, scaled by ``α / (init_r + 1e-5)``) with the
orthogonality regulariser ``R = Σ ‖PᵀP − I‖_F + ‖QQᵀ − I‖_F`` (averaged over the matrices) added to
the loss with ``orth_reg_weight``; the RankAllocator scores every triplet (AdaLoRA eqs. 8–10) and
masks the lowest singular values ``λ`` (entries of E) to a budget that decays cubically from
n·init_r to n·r between steps ``tinit`` and ``total_steps − tfinal``.

peft's contract, followed exactly: ``model.base_model.update_and_allocate(global_step)`` "in every
training step after ``loss.backward()`` and before ``zero_grad()``" — here in
``after_optimizer_step`` (after ``optimizer.step()``, as in peft's example and the AdaLoRA code), with
the 1-based optimizer step. Without that call AdaLoRA silently degrades to (SVD-parametrised) LoRA.

The regulariser lives in ``AdaLoraModel.forward``, so the training loop must compute the loss as
``controller.forward_model(**batch).loss`` (``forward_model`` is the ``AdaLoraModel``; the Engine does
this). Weights and checkpoints go through the HF model itself (``controller.model``), where peft
injected its ``SVDLinear`` layers in place; the task head is trained in full, as the other methods do.

AdaLoRA violates a strict memory budget by design: the tensors stay at ``init_r`` all run (masked,
never resized). ``report()["ranks"]`` gives the allocated rank pattern; the export writes each
module's unmasked triplets as a plain LoRA adapter with per-module ranks.
"""

from __future__ import annotations

from typing import Any

import torch
from peft import AdaLoraConfig as PeftAdaLoraConfig
from peft.tuners.adalora import AdaLoraModel
from torch import nn

from wlora.core.config import require_run_field
from wlora.core.controller import Controller
from wlora.methods.adalora.config import AdaLoRAConfig

ADAPTER = "default"


class AdaLoRAController(Controller):
    slug = "adalora"

    def __init__(self, model: nn.Module, config: AdaLoRAConfig):
        super().__init__(model, config, inject=False)
        self.init_r = config.resolved_init_r
        peft_cfg = PeftAdaLoraConfig(
            target_modules=list(self.target_names),
            init_r=self.init_r,
            target_r=config.r,
            tinit=config.resolved_tinit,
            tfinal=config.resolved_tfinal,
            deltaT=config.delta_t,
            beta1=config.beta1,
            beta2=config.beta2,
            orth_reg_weight=config.orth_reg_weight,
            total_step=require_run_field(config, "total_steps"),
            lora_alpha=config.alpha,
            lora_dropout=config.dropout,
        )
        #: peft's tuner (injected into ``model`` in place); its forward adds the orthogonal regulariser.
        self.peft = AdaLoraModel(model, peft_cfg, ADAPTER)
        for h in self.head_names:  # peft froze everything but the adapters
            for p in model.get_submodule(h).parameters():
                p.requires_grad_(True)
        self.steps_done = 0
        #: How many times update_and_allocate changed the per-module rank pattern.
        self.rank_changes = 0

    @property
    def forward_model(self) -> nn.Module:
        return self.peft

    @property
    def peft_config(self) -> PeftAdaLoraConfig:
        return self.peft.peft_config[ADAPTER]

    def svd_layers(self) -> dict[str, nn.Module]:
        return {n: self.model.get_submodule(n) for n in self.target_names}

    # ----- hooks -----

    def after_optimizer_step(self, step: int, optimizer: torch.optim.Optimizer) -> None:
        before = self.ranks()
        self.peft.update_and_allocate(step)
        self.steps_done = step
        if self.ranks() != before:
            self.rank_changes += 1

    # ----- ranks / export -----

    def ranks(self) -> dict[str, int]:
        """Allocated rank per module: unmasked triplets of peft's rank pattern (init_r before any)."""
        pattern = self.peft_config.rank_pattern
        if not pattern:
            return {n: self.init_r for n in self.target_names}
        by_module = {k.split(".lora_E")[0]: int(sum(bool(b) for b in v)) for k, v in pattern.items()}
        return {n: by_module.get(n, self.init_r) for n in self.target_names}

    def kept_adapters(self) -> dict[str, int]:
        """Modules with a non-zero allocated rank, and that rank."""
        return {n: r for n, r in self.ranks().items() if r > 0}

    def export_factors(self) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
        """``(A_kept, B_kept diag(E_kept), α / (ranknum + 1e-5))`` per module; triplets with E = 0 are left out."""
        out = {}
        for name, layer in self.svd_layers().items():
            E = layer.lora_E[ADAPTER].detach().view(-1)
            keep = E != 0
            A = layer.lora_A[ADAPTER].detach()[keep]
            B = layer.lora_B[ADAPTER].detach()[:, keep] * E[keep]
            scale = float(layer.scaling[ADAPTER]) / (float(layer.ranknum[ADAPTER]) + 1e-5)
            out[name] = (A, B, scale)
        return out

    def adapter_param_count(self) -> int:
        """Allocated adapter parameters (A, E, B at init_r: AdaLoRA masks, it never shrinks tensors)."""
        return sum(
            layer.lora_A[ADAPTER].numel() + layer.lora_B[ADAPTER].numel() + layer.lora_E[ADAPTER].numel()
            for layer in self.svd_layers().values()
        )

    # ----- state / report -----

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        alloc = self.peft.rankallocator
        state.update(
            steps_done=self.steps_done,
            rank_changes=self.rank_changes,
            rank_pattern=self.peft_config.rank_pattern,
            ipt={k: v.clone() for k, v in alloc.ipt.items()},
            exp_avg_ipt={k: v.clone() for k, v in alloc.exp_avg_ipt.items()},
            exp_avg_unc={k: v.clone() for k, v in alloc.exp_avg_unc.items()},
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.steps_done = int(state["steps_done"])
        self.rank_changes = int(state["rank_changes"])
        pattern = state["rank_pattern"]
        self.peft_config.rank_pattern = None if pattern is None else {k: list(v) for k, v in pattern.items()}
        alloc = self.peft.rankallocator
        alloc.ipt = {k: v.clone() for k, v in state["ipt"].items()}
        alloc.exp_avg_ipt = {k: v.clone() for k, v in state["exp_avg_ipt"].items()}
        alloc.exp_avg_unc = {k: v.clone() for k, v in state["exp_avg_unc"].items()}

    def report(self) -> dict[str, Any]:
        ranks = self.ranks()
        out = {
            "method": self.slug,
            "n_adapters": self.n_adapters,
            "active_adapters": sum(r > 0 for r in ranks.values()),
            "adapter_params": self.adapter_param_count(),
            "ranks": ranks,
            "init_r": self.init_r,
            "target_r": self.config.r,
            "rank_sum": sum(ranks.values()),
            "rank_changes": self.rank_changes,
            "tinit": self.peft_config.tinit,
            "tfinal": self.peft_config.tfinal,
        }
        if self.steps_done > 0:
            out["budget"] = self.peft.rankallocator.budget_schedule(self.steps_done)[0]
        return out
