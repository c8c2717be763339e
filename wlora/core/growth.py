"""Output-preserving rank growth of LoRA adapters (WeightLoRA+ paper §3.4).

With ``A: r × d_in`` and ``B: d_out × r`` (peft orientation) and ``e = r_new − r`` new components:

* ``init="random"`` (official code): ``A_new = [A; N]`` with N drawn like LoRA's A init,
  ``B_new = [B, 0]``  ⇒ ``B_new A_new = B A``.
* ``init="qr"`` (paper's second variant; the paper's A is peft's B): ``B = Q R`` (reduced QR),
  ``B_new = [Q, (I − Q Qᵀ) N]``, ``A_new = [R A; 0]``  ⇒ ``B_new A_new = Q R A = B A`` and the new
  output directions are orthogonal to the old ones.

The scale s is left unchanged, so the adapter output, and hence the model output, is unchanged at
the moment of growth.

AdamW state. ``random``: the old rows of A and columns of B are the same coordinates as before
(∂L/∂A_old = s·B_oldᵀ G, ∂L/∂B_old = s·G A_oldᵀ with G = ∂L/∂ΔW, unchanged by appending), so their
moments and step count stay exactly; the new components start at zero moments with a fresh AdamW's
bias correction (:func:`~wlora.core.optim.track_component_ages`). ``qr``: the old block is
re-parametrised (B → Q, A → R A), so its gradients become ∂L/∂Q = (∂L/∂B) Rᵀ and ∂L/∂(RA) = R⁻ᵀ ∂L/∂A —
a linear mix (and rescaling: ‖Q_j‖ = 1 while B starts at 0) of the old coordinates. The first moment
would transform with R but the second (element-wise squares) cannot, so the old moments describe
other coordinates: the whole of A and B restart as fresh AdamW tensors (state dropped).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from wlora.core.config import GROWTH_INITS
from wlora.core.layer import LoRALinear
from wlora.core.optim import reset_state, resize_param_


def plan_ranks(layers: Mapping[str, LoRALinear], survivors: Sequence[str], budget: int) -> dict[str, int]:
    """Largest ranks for ``survivors`` with Σ r_i (d_in + d_out) ≤ ``budget``.

    Every survivor first gets the largest common rank that fits (for equal shapes ``⌊budget / (K·d)⌋``,
    i.e. ``⌊r·n/K⌋``), never below its current rank; the remaining budget then goes +1 at a time to
    survivors in the order given (most important first) while it fits. For equal shapes this uses the
    budget exactly whenever it is a multiple of ``d_in + d_out``.
    """
    width = {n: layers[n].in_features + layers[n].out_features for n in survivors}
    common = budget // sum(width.values())
    ranks = {n: max(layers[n].r, common) for n in survivors}
    used = sum(ranks[n] * width[n] for n in survivors)
    if used > budget:
        raise ValueError(f"survivors already use {used} adapter parameters, above the budget {budget}")
    grew = True
    while grew:
        grew = False
        for n in survivors:
            if used + width[n] <= budget:
                ranks[n] += 1
                used += width[n]
                grew = True
    return ranks


@torch.no_grad()
def grow_rank_(
    layer: LoRALinear,
    r_new: int,
    init: str,
    generator: torch.Generator,
    optimizer: torch.optim.Optimizer | None = None,
) -> None:
    """Grow ``layer`` to rank ``r_new`` in place without changing its output (see module docstring)."""
    if init not in GROWTH_INITS:
        raise ValueError(f"`init` must be one of {GROWTH_INITS}, got {init!r}")
    r, extra = layer.r, r_new - layer.r
    if extra < 0:
        raise ValueError(f"cannot grow rank {r} down to {r_new}")
    if extra == 0:
        return
    A, B = layer.lora_A.detach(), layer.lora_B.detach()
    d_in, d_out = A.shape[1], B.shape[0]
    if init == "random":
        bound = 1.0 / math.sqrt(d_in)  # LoRA's A init: kaiming_uniform(a=√5) on (·, d_in)
        noise = torch.rand(extra, d_in, generator=generator, dtype=torch.float64) * (2 * bound) - bound
        A_new = torch.cat([A, noise.to(A)], dim=0)
        B_new = torch.cat([B, torch.zeros(d_out, extra, dtype=B.dtype, device=B.device)], dim=1)
    else:
        if r > d_out:
            raise ValueError(f"init='qr' needs r <= d_out, got r={r}, d_out={d_out}")
        B64, A64 = B.double().cpu(), A.double().cpu()
        Q, R = torch.linalg.qr(B64, mode="reduced")
        noise = torch.randn(d_out, extra, generator=generator, dtype=torch.float64) / math.sqrt(d_out)
        noise = noise - Q @ (Q.T @ noise)  # (I − Q Qᵀ) N
        B_new = torch.cat([Q, noise], dim=1).to(B)
        A_new = torch.cat([R @ A64, torch.zeros(extra, d_in, dtype=torch.float64)], dim=0).to(A)
    resize_param_(layer.lora_A, A_new, (slice(0, r), slice(None)), optimizer)
    resize_param_(layer.lora_B, B_new, (slice(None), slice(0, r)), optimizer)
    if init == "qr" and optimizer is not None:
        reset_state(optimizer, [layer.lora_A, layer.lora_B])  # new coordinates: see the module docstring
    layer.r = r_new
