"""Step time and peak GPU memory of LoRA / WeightLoRA / WeightLoRA+ at bf16 and fp16, with 1 vs N trials
sharing one GPU (what ``--gpus-per-trial 1/N`` packs). Runs wherever CUDA exists; prints a table.

    python bench/gpu_check.py [--model roberta-base | PATH] [--random-weights] [--per-gpu 1,4] \
        [--batch-size 32] [--seq 128] [--steps 30] [--json out.json]

Each configuration starts N processes on the same device at once; each builds the model (``--random-weights``:
from the model's config, no download of weights, e.g. a RoBERTa-base config), injects the method's adapters
(r = 8, q/k/v; WeightLoRA K = n/4, T = 10), and times ``--steps`` optimizer steps on synthetic token batches
after 5 warm-up steps, under ``torch.autocast`` in the requested dtype (fp16 with a GradScaler). Reported per
configuration: mean step time per trial, the trials' combined throughput (examples/s) and each trial's peak
allocated memory. The ratio ``N × throughput(1) / throughput(N)`` says how much packing N trials slows each.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

METHODS = {
    "lora": {"r": 8},
    "weightlora": {"r": 8, "k_fraction": 0.25, "t": 10, "lr_w": 5.0},
    "weightlora_plus": {"r": 8, "k_fraction": 0.25, "t": 10, "lr_w": 5.0},
}


def one_trial(args: dict, queue) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    import wlora
    from wlora.engine import Engine

    torch.manual_seed(0)
    dev = torch.device("cuda")
    if args["random_weights"]:
        model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(args["model"], num_labels=2))
    else:
        model = AutoModelForSequenceClassification.from_pretrained(args["model"], num_labels=2)
    ctl = wlora.build_method(args["method"], model, METHODS[args["method"]])
    model.to(dev)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[args["precision"]]
    scaler = torch.amp.GradScaler("cuda") if args["precision"] == "fp16" else None
    total = args["steps"] + 5
    eng = Engine(model, ctl, lr=1e-3, total_steps=total, autocast=lambda: torch.autocast("cuda", dtype=dtype),
                 grad_scaler=scaler)  # fmt: skip
    vocab = model.config.vocab_size
    batch = {
        "input_ids": torch.randint(5, vocab, (args["batch_size"], args["seq"]), device=dev),
        "attention_mask": torch.ones(args["batch_size"], args["seq"], dtype=torch.long, device=dev),
        "labels": torch.randint(0, 2, (args["batch_size"],), device=dev),
    }
    for _ in range(5):
        eng.train_step(batch)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args["steps"]):
        eng.train_step(batch)
    torch.cuda.synchronize()
    step = (time.perf_counter() - t0) / args["steps"]
    queue.put({"step_s": step, "peak_mb": torch.cuda.max_memory_allocated() / 2**20})


def run_config(base: dict, n: int) -> dict:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=one_trial, args=(base, queue)) for _ in range(n)]
    for p in procs:
        p.start()
    outs = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    step = sum(o["step_s"] for o in outs) / n
    return {
        **{k: base[k] for k in ("method", "precision")},
        "trials_per_gpu": n,
        "step_s": step,
        "throughput": n * base["batch_size"] / step,
        "peak_mb": max(o["peak_mb"] for o in outs),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="roberta-base")
    p.add_argument("--random-weights", action="store_true")
    p.add_argument("--per-gpu", default="1,4")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--precisions", default="bf16,fp16")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--json")
    a = p.parse_args()
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark measures GPUs only")
    rows = []
    print(f"{torch.cuda.get_device_name(0)}; batch {a.batch_size} × {a.seq} tokens; {a.steps} timed steps")
    print(f"{'method':16} {'prec':5} {'N':>2} {'step s':>8} {'ex/s':>8} {'peak MiB':>9} {'slowdown':>9}")
    for method in a.methods.split(","):
        for prec in a.precisions.split(","):
            single = None
            for n in (int(x) for x in a.per_gpu.split(",")):
                base = dict(model=a.model, random_weights=a.random_weights, method=method, precision=prec,
                            batch_size=a.batch_size, seq=a.seq, steps=a.steps)  # fmt: skip
                r = run_config(base, n)
                single = r if n == 1 else single
                r["slowdown"] = (n * single["throughput"] / r["throughput"]) if single else None
                rows.append(r)
                slow = f"{r['slowdown']:.2f}×" if r["slowdown"] else "–"
                print(f"{method:16} {prec:5} {n:>2} {r['step_s']:8.3f} {r['throughput']:8.0f} {r['peak_mb']:9.0f} "
                      f"{slow:>9}", flush=True)  # fmt: skip
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
