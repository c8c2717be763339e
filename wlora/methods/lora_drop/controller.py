"""LoRA-drop (Zhou et al.): keep LoRA where its output matters, share one LoRA elsewhere.

Importance evaluation (paper §3.1, eqs. 2–3), on the output of each adapter ``ΔW_i = s·B_i A_i``:

    g_i = Σ_{x ∈ D_s} ‖ΔW_i x_i‖²,        I_i = g_i / Σ_j g_j

Selection (§3.2): sort by I descending, keep the smallest prefix whose cumulative importance reaches
``threshold`` (T). Task adaptation (§3.2, A.1): start again from the pretrained weights; every kept
module gets a fresh LoRA; the non-kept modules of one type (e.g. all non-kept ``query``) share ONE
LoRA — tied A and B, a single parameter pair used by many modules. ``share=False`` drops them
(§4.4 ablation "w/o share"). Trainable adapter parameters: (kept + shared groups)·r·(d_in + d_out).

How it runs inside the generic training loop (the controller never sees the data layer): the
importance evaluation is the first ``importance_steps = importance_epochs · sample_steps`` optimizer
steps of the run, ``sample_steps = ⌈sample_ratio · steps_per_epoch⌉`` being one pass over the α-sample
(``steps_per_epoch`` is filled in by the runner). During them plain LoRA trains on all n targets as
usual. The runner feeds those steps from a stratified ``sample_ratio`` subset of the training set
(:func:`wlora.core.sampling.stratified_sample`), read as a stream of passes in which every step takes a
full batch (:func:`wlora.schedule.importance_batch_indices`: no empty or short steps, whatever the
sample's size); if it fed the normal stream instead, the sample would be the first batches of the run
(random, not stratified). The importance run is a short run of its own: the Engine gives it its own
learning-rate schedule (peak lr, linear decay, no warm-up, so every step trains) and the task run a
fresh warm-up/decay over its own steps (:func:`wlora.engine.phased_lr_lambda`). ``g_i`` is accumulated
by forward hooks during the last ``sample_steps`` steps (about one pass over the sample), with the
adapters as they are while that pass trains (the paper evaluates them after training; a separate data
pass is not possible through the hooks). Only real tokens count (``attention_mask`` of the batch) and
ΔW x is taken without dropout. At the end of step ``importance_steps`` (``after_optimizer_step``): selection, then
the restart: all importance adapters are removed with their optimizer state, the task head is reset
to its initial weights with fresh optimizer state, and the new adapters join the optimizer fresh.

Left open by the paper, decided here: the importance budget (paper: 3 epochs over the 10% sample =
``importance_epochs``); the "module type" of the sharing (the module name with its layer indices
replaced by ``*``, e.g. ``bert.encoder.layer.*.attention.self.query``; shapes must match); ties in I
go to model order; the cumulative test is exact (``Σ_{k≤K} g_(k) ≥ T·Σ g``); if every g_i is 0 the
importance is uniform (reported as ``importance_uniform``; it happens only if no update reached B
before the last pass). The runner's total counts the importance run plus the full task budget.
"""

from __future__ import annotations

import re
import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wlora.core.controller import Controller
from wlora.core.inject import inject_adapters
from wlora.core.layer import LoRALinear
from wlora.core.optim import reset_state, set_params
from wlora.methods.lora_drop.config import LoRADropConfig

_LAYER_INDEX = re.compile(r"(?<=\.)\d+(?=\.|$)")


def module_type(name: str) -> str:
    """The sharing group of a module: its name with layer indices replaced by ``*``."""
    return _LAYER_INDEX.sub("*", name)


def keep_prefix(scores: torch.Tensor, threshold: float) -> tuple[list[int], torch.Tensor]:
    """Indices (most important first) of the smallest prefix reaching ``threshold``, and I = g / Σ g.

    ``scores`` are the g_i; sorting is stable (ties in model order). The test is made on the running
    sum in sorted order against ``threshold`` times the same total, so ``threshold = 1`` keeps exactly
    the modules with g_i > 0 (or all, if every g_i is 0 — then the importance is uniform).
    """
    g = scores.double()
    if not bool((g > 0).any()):
        g = torch.ones_like(g)
    order = torch.sort(g, descending=True, stable=True).indices
    cum = torch.cumsum(g[order], 0)
    total = cum[-1]
    k = int(torch.nonzero(cum >= threshold * total)[0]) + 1
    return order[:k].tolist(), g / total


class LoRADropController(Controller):
    slug = "lora_drop"

    def __init__(self, model: nn.Module, config: LoRADropConfig):
        super().__init__(model, config)
        self.sample_steps = config.sample_steps
        #: The importance phase: optimizer steps 1..importance_steps.
        self.importance_steps = config.importance_steps
        self.phase = "importance"
        self.steps_done = 0
        #: g_i accumulated so far (eq. 2), in target order.
        self.g = torch.zeros(self.n_adapters, dtype=torch.float64)
        # The task head restarts from its initial weights at the switch (the paper retrains from scratch).
        self.head_init = {
            h: {k: v.detach().clone() for k, v in model.get_submodule(h).state_dict().items()} for h in self.head_names
        }
        #: I_i per module (eq. 3), most important first, once selected.
        self.importance: dict[str, float] = {}
        #: Modules keeping their own LoRA (model order).
        self.kept: list[str] = []
        #: Sharing groups {module type: non-kept members}; with share=False the dropped modules.
        self.shared: dict[str, list[str]] = {}
        self._attention_mask: torch.Tensor | None = None
        self._hooks: list[Any] = []
        self._install_hooks()

    # ----- importance accumulation -----

    @property
    def accumulating(self) -> bool:
        """True while the next training forward belongs to the last pass over the sample."""
        return self.phase == "importance" and self.steps_done >= self.importance_steps - self.sample_steps

    def _install_hooks(self) -> None:
        # Plain closures over a weak reference: a deep copy of the model (export) copies no controller,
        # and the copy's modules are not ours, so they never count.
        ref = weakref.ref(self)

        def capture_mask(module, args, kwargs):
            ctl = ref()
            if ctl is not None and module is ctl.model:
                ctl._attention_mask = kwargs.get("attention_mask")

        self._hooks.append(self.model.register_forward_pre_hook(capture_mask, with_kwargs=True))
        for i, name in enumerate(self.target_names):

            def accumulate(module, inputs, output, i=i, name=name):
                ctl = ref()
                if ctl is None or not module.training or not ctl.accumulating or ctl.layers.get(name) is not module:
                    return
                with torch.no_grad():
                    x = inputs[0].to(module.lora_A.dtype)
                    y = F.linear(F.linear(x, module.lora_A), module.lora_B) * module.scaling  # ΔW x, no dropout
                    sq = y.float().pow(2).sum(-1)
                    mask = ctl._attention_mask
                    if mask is not None and tuple(mask.shape) == tuple(sq.shape):
                        sq = sq * mask.to(sq)
                    ctl.g[i] += sq.sum().double().cpu()

            self._hooks.append(self.layers[name].register_forward_hook(accumulate))

    def _remove_hooks(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []
        self._attention_mask = None

    # ----- hooks -----

    def after_optimizer_step(self, step: int, optimizer: torch.optim.Optimizer) -> None:
        self.steps_done = step
        if self.phase == "importance" and step >= self.importance_steps:
            self._select()
            self._build_task_adapters(optimizer)

    # ----- selection and restart -----

    def _select(self) -> None:
        keep_idx, imp = keep_prefix(self.g, self.config.threshold)
        order = torch.sort(imp, descending=True, stable=True).indices.tolist()
        self.importance = {self.target_names[i]: float(imp[i]) for i in order}
        kept = {self.target_names[i] for i in keep_idx}
        self.kept = [n for n in self.target_names if n in kept]
        groups: dict[tuple[str, int, int], list[str]] = {}
        for n in self.target_names:
            if n not in kept:
                layer = self.layers[n]
                groups.setdefault((module_type(n), layer.in_features, layer.out_features), []).append(n)
        types = [t for t, _, _ in groups]
        self.shared = {
            (t if types.count(t) == 1 else f"{t}[{d_in}x{d_out}]"): members
            for (t, d_in, d_out), members in groups.items()
        }

    def _build_task_adapters(self, optimizer: torch.optim.Optimizer | None) -> None:
        """Restart from the pretrained weights: fresh LoRA on kept modules, one tied LoRA per group."""
        cfg = self.config
        self._remove_hooks()
        self.remove_adapters(list(self.layers), optimizer)
        with torch.no_grad():
            for h, state in self.head_init.items():
                self.model.get_submodule(h).load_state_dict(state)
        if optimizer is not None:
            reset_state(optimizer, [p for h in self.head_names for p in self.model.get_submodule(h).parameters()])
        kw = {"r": cfg.r, "alpha": cfg.alpha, "dropout": cfg.dropout}
        layers: dict[str, LoRALinear] = inject_adapters(self.model, self.kept, **kw)
        if cfg.share:
            for members in self.shared.values():
                group = inject_adapters(self.model, members, **kw)
                owner = group[members[0]]
                for name in members[1:]:  # tie: the very same Parameter objects, one copy in memory
                    group[name].lora_A = owner.lora_A
                    group[name].lora_B = owner.lora_B
                layers.update(group)
        self.layers = {n: layers[n] for n in self.target_names if n in layers}
        self.phase = "task"
        self.head_init = {}
        if optimizer is not None:
            set_params(optimizer, self.optimizer_params())  # the order a fresh optimizer would have

    def kept_adapters(self) -> dict[str, int]:
        """All n adapters during the importance run, then the modules keeping their own LoRA."""
        if self.phase == "importance":
            return super().kept_adapters()
        return {n: int(self.layers[n].r) for n in self.kept}

    # ----- sizes / state / report -----

    def adapter_param_count(self) -> int:
        """Distinct adapter parameters (a shared LoRA counts once)."""
        seen = {id(p): p for layer in self.layers.values() for p in (layer.lora_A, layer.lora_B)}
        return sum(p.numel() for p in seen.values())

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(
            phase=self.phase,
            steps_done=self.steps_done,
            g=self.g.clone(),
            head_init={h: {k: v.clone() for k, v in s.items()} for h, s in self.head_init.items()},
            importance=dict(self.importance),
            kept=list(self.kept),
            shared={k: list(v) for k, v in self.shared.items()},
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("slug") != self.slug:
            raise ValueError(f"checkpoint is for method {state.get('slug')!r}, not {self.slug!r}")
        self.steps_done = int(state["steps_done"])
        self.g = state["g"].clone()
        self.importance = dict(state["importance"])
        self.kept = list(state["kept"])
        self.shared = {k: list(v) for k, v in state["shared"].items()}
        self.head_init = {h: {k: v.clone() for k, v in s.items()} for h, s in state["head_init"].items()}
        if state["phase"] == "task" and self.phase == "importance":
            self._build_task_adapters(None)
        self.generator.set_state(state["generator"])

    def report(self) -> dict[str, Any]:
        out = super().report()
        out.update(
            phase=self.phase,
            selected=self.phase == "task",
            threshold=self.config.threshold,
            share=self.config.share,
            importance_steps=self.importance_steps,
            sample_steps=self.sample_steps,
            importance=dict(self.importance),
            # every g_i was 0 (e.g. an importance phase that ended inside a warm-up at lr 0): the
            # selection fell back to uniform importance, i.e. model order
            importance_uniform=self.phase == "task" and not bool((self.g > 0).any()),
            kept=list(self.kept),
            selected_adapters=list(self.kept),
            shared_groups={k: list(v) for k, v in self.shared.items()} if self.config.share else {},
            dropped=[n for v in self.shared.values() for n in v] if not self.config.share else [],
        )
        return out
