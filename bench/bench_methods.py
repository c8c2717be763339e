"""Train-step cost of the methods on one model, measured in one run, printed as ratios.

    python bench/bench_methods.py --model sentence-transformers/all-MiniLM-L6-v2 --data-dir DATA

Compares, with the same rank, targets, batch and AdamW:
  * our ``lora`` vs peft's LoRA (identical plain loop: forward, backward, AdamW step, zero_grad);
  * ``weightlora`` before selection (all n gated adapters + gate SGD) and after selection (K = n // 4
    adapters physically left), and ``weightlora_plus`` after growth (K adapters, LoRA's budget).
Configs are timed in interleaved rounds (median step time per config) so machine drift hits all
alike. With ``--data-dir`` the batch is real SST-2 text, otherwise random token ids.

Memory, as ratios to LoRA's (same batch, train mode): the bytes autograd saves for backward during
one forward (``torch.autograd.graph.saved_tensors_hooks``; distinct storages, parameters left out)
and the AdamW state bytes. ``--targets all-linear`` adapts every linear layer instead of q/k/v;
``--memory-only`` skips the timing; ``--roberta-base-shape`` replaces the model by a randomly
initialised RoBERTa-base-sized one (``RobertaConfig()``: 12 layers, hidden 768) on random tokens, the
size of the papers' GLUE backbones::

    python bench/bench_methods.py --roberta-base-shape --memory-only --batch-size 16 --seq-len 128
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from collections.abc import Callable

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging

import wlora
from wlora.core import count_parameters, optimizer_state_bytes, saved_for_backward_bytes
from wlora.data import read_glue_split
from wlora.train import Engine, seed_everything


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model",
        default=os.environ.get("WLORA_MODEL", "sentence-transformers/all-MiniLM-L6-v2"),
        help="local folder or hub id (default: $WLORA_MODEL or all-MiniLM-L6-v2 from the hub)",
    )
    p.add_argument(
        "--data-dir",
        default=os.environ.get("WLORA_DATA_DIR"),
        help="folder holding glue/SST-2 (default: $WLORA_DATA_DIR); random tokens if unset",
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--r", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="timed steps per config per round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median over all)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--targets", default=None, help="target_modules (e.g. all-linear); default: the family's q/k/v")
    p.add_argument("--memory-only", action="store_true", help="measure memory only, no step timing")
    p.add_argument(
        "--roberta-base-shape", action="store_true", help="random-weight RoBERTa-base-sized model, random tokens"
    )
    return p.parse_args()


def make_batch(args, tokenizer, vocab_size: int) -> dict[str, torch.Tensor]:
    if args.data_dir and tokenizer is not None:
        ex = read_glue_split(os.path.join(args.data_dir, "glue"), "sst2", "train")[: args.batch_size]
        enc = tokenizer(
            [e.text_a for e in ex],
            padding="max_length",
            truncation=True,
            max_length=args.seq_len,
            return_tensors="pt",
        )
        enc["labels"] = torch.tensor([e.label for e in ex])
        return dict(enc)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, vocab_size, (args.batch_size, args.seq_len), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids[:, 0] % 2}


def plain_stepper(model, params, batch) -> Callable[[], None]:
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step():
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.set_verbosity_error()
    seed_everything(0)
    if args.roberta_base_shape:
        from transformers import RobertaConfig, RobertaForSequenceClassification

        base = RobertaForSequenceClassification(RobertaConfig(num_labels=2))
        args.model, args.data_dir = "RobertaConfig() (random weights)", None
        batch = make_batch(args, None, base.config.vocab_size)
    else:
        tokenizer = AutoTokenizer.from_pretrained(args.model)
        batch = make_batch(args, tokenizer, tokenizer.vocab_size)
        base = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)
    base.train()

    rows: dict[str, dict] = {}
    steppers: dict[str, Callable[[], None]] = {}

    # ours vs peft: the same plain loop
    common = {"r": args.r, **({"target_modules": args.targets} if args.targets else {})}
    ours = copy.deepcopy(base)
    ctl = wlora.build_method("lora", ours, common)
    n = ctl.n_adapters
    k = max(1, n // 4)
    if not args.memory_only:
        steppers["lora (ours)"] = plain_stepper(ours, ctl.optimizer_params(), batch)
    rows["lora (ours)"] = {"params": count_parameters(ours, ctl.head_names)["trainable"], "active": n}

    pm = get_peft_model(
        copy.deepcopy(base),
        LoraConfig(
            r=args.r,
            lora_alpha=32,
            lora_dropout=0.05,
            target_modules=list(ctl.layers),
            modules_to_save=list(ctl.head_names),
        ),
    )
    pm.train()
    peft_params = [p for p in pm.parameters() if p.requires_grad]
    if not args.memory_only:
        steppers["lora (peft)"] = plain_stepper(pm, peft_params, batch)
    rows["lora (peft)"] = {"params": sum(p.numel() for p in peft_params), "active": n}

    # the adaptive methods through the Engine (hooks included)
    def engine_config(label, slug, cfg, warm_steps):
        model = copy.deepcopy(base)
        c = wlora.build_method(slug, model, {**common, **cfg})
        eng = Engine(model, c, lr=1e-4, total_steps=10**6)
        for _ in range(warm_steps):  # get past selection / growth before timing
            eng.train_step(batch)
        model.train()
        rows[label] = {
            "params": count_parameters(model, c.head_names)["trainable"],
            "active": len(c.layers),
            "opt_bytes": optimizer_state_bytes(eng.optimizer),
            "saved_bytes": saved_for_backward_bytes(lambda: model(**batch).loss, model),
            "kept": list(c.layers),
        }
        if not args.memory_only:
            steppers[label] = lambda: eng.train_step(batch)

    engine_config("lora (ours, Engine)", "lora", {}, 1)
    engine_config("weightlora before selection", "weightlora", {"k": k, "t": 10**6}, 1)
    engine_config(f"weightlora after selection (K={k})", "weightlora", {"k": k, "t": 2}, 3)
    engine_config(f"weightlora_plus after growth (K={k})", "weightlora_plus", {"k": k, "t": 2}, 3)

    print(
        f"model={args.model} batch={args.batch_size}x{args.seq_len} r={args.r} n={n} K={k} "
        f"targets={args.targets or 'family default'} threads={torch.get_num_threads()} "
        f"data={'SST-2' if args.data_dir else 'random tokens'}"
    )
    wl_before, wl_after = "weightlora before selection", f"weightlora after selection (K={k})"
    plus = f"weightlora_plus after growth (K={k})"
    ref = rows["lora (ours, Engine)"]
    print("memory, ratio to lora (saved-for-backward bytes / optimizer-state bytes):")
    for label in ("lora (ours, Engine)", wl_before, wl_after, plus):
        row = rows[label]
        print(
            f"  {label:38s} {row['saved_bytes'] / ref['saved_bytes']:.4f} / {row['opt_bytes'] / ref['opt_bytes']:.4f}"
            f"   ({row['saved_bytes'] / 2**20:.1f} MiB / {row['opt_bytes'] / 2**20:.2f} MiB)"
        )
    if args.memory_only:
        return

    times: dict[str, list[float]] = {label: [] for label in steppers}
    for fn in steppers.values():  # warm-up of allocator / kernels
        fn()
    for _ in range(args.rounds):
        for label, fn in steppers.items():
            for _ in range(args.steps):
                t0 = time.perf_counter()
                fn()
                times[label].append(time.perf_counter() - t0)
    med = {label: statistics.median(ts) for label, ts in times.items()}

    print(f"{'config':40s} {'step ms':>9s} {'trainable':>10s} {'active':>6s}")
    for label in steppers:
        print(f"{label:40s} {1000 * med[label]:9.1f} {rows[label]['params']:10d} {rows[label]['active']:6d}")
    # Backward stops at the lowest layer holding a trainable tensor, so where the kept adapters sit
    # matters for step time as much as how many there are.
    print(f"kept after selection: {', '.join(x.replace('.attention.self', '') for x in rows[wl_after]['kept'])}")
    print("ratios (step time):")
    print(f"  ours lora / peft lora                      = {med['lora (ours)'] / med['lora (peft)']:.3f}")
    print(f"  weightlora after / before selection       = {med[wl_after] / med[wl_before]:.3f}")
    print(f"  weightlora after selection / lora (Engine) = {med[wl_after] / med['lora (ours, Engine)']:.3f}")
    print(f"  weightlora_plus after growth / lora (Engine) = {med[plus] / med['lora (ours, Engine)']:.3f}")
    print("ratios (trainable params / optimizer-state bytes):")
    print(
        f"  weightlora after / before selection       = {rows[wl_after]['params'] / rows[wl_before]['params']:.3f}"
        f" / {rows[wl_after]['opt_bytes'] / rows[wl_before]['opt_bytes']:.3f}"
    )
    print(
        f"  weightlora_plus / lora                     = "
        f"{rows[plus]['params'] / rows['lora (ours, Engine)']['params']:.3f}"
    )


if __name__ == "__main__":
    main()
