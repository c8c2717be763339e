"""The forecast's arithmetic, with no model and no machine in it: what a trial computes (:class:`CellWork`), how
fast a trial runs (:class:`Speed`), how far ASHA lets each trial get, and the expected makespan of a FIFO
schedule of such trials on a number of slots. ``sweeps.forecast`` puts the sweep's plan through it.

ASHA: a trial reaches rung k (grace · η^k evaluations) with probability η^-k in a large sweep, the expected cost
of successive halving; a small one promotes more, as Ray's asynchronous rule does when a rung has few results
(:func:`asha_trials`). Makespan: the trials run first-in-first-out on the slots (search trials of all cells
round robin, a cell's seed re-runs once its search has ended), slots freed at mean durations; the makespan is
the expected latest end over the ASHA outcomes of each trial.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

#: The papers' bash grid per cell (WeightLoRA paper, App. B.1): 10 learning rates × 6 warm-ups, full budget each.
PAPERS_GRID = 10 * 6
#: Training FLOPs per token per backbone matmul parameter: adapter methods, full fine-tuning.
FLOPS_ADAPTER, FLOPS_FULL, FLOPS_EVAL = 4.0, 6.0, 2.0


@dataclass(frozen=True)
class Speed:
    """What one trial computes per second on the target hardware, and how many trials run at once."""

    name: str
    slots: int
    train_tok_s: float  # training tokens per second per trial (adapter methods)
    eval_tok_s: float
    startup_s: float
    sweep_overhead_s: float = 0.0  # paid once per sweep (Ray, the tracking store, the first trial's imports)
    full_ft_factor: float = FLOPS_FULL / FLOPS_ADAPTER
    device_kind: str = "CPU"
    devices_per_trial: float = 1.0
    # how the speed was found (a calibration on this machine): training tokens/s of each repeat (the speed is
    # the fastest), the 1-minute load average while calibrating, the machine's cores and the threads it used
    train_repeats: tuple[float, ...] = ()
    eval_repeats: tuple[float, ...] = ()
    load_1min: float | None = None
    cores: int = 0
    own_threads: int = 0
    notes: tuple[str, ...] = ()  # lines the forecast prints under the speed (e.g. how GPU trials are packed)


@dataclass(frozen=True)
class CellWork:
    name: str
    steps: int
    evals: int
    tokens_per_step: int
    eval_tokens: int
    full_ft: bool
    #: methods that keep K of the n adapters (WeightLoRA, WeightLoRA+, random selection): the other n − K are
    #: removed after ``select_step`` optimizer steps, and every later step costs ``after_select`` × a step with
    #: all n adapters (the frozen backbone's backward pass stops at the lowest kept adapter). 1.0: no selection.
    select_step: int = 0
    after_select: float = 1.0


def asha_expected_evals(max_t: int, grace: int, eta: float) -> float:
    """Expected evaluations of one trial under (synchronous) successive halving: rung k at grace·η^k (< max_t)
    is reached with probability η^-k, the last stretch to max_t with probability η^-K (K rungs)."""
    points = _rung_points(max_t, grace, eta)
    total, prev = 0.0, 0
    for k, point in enumerate(points):
        total += (point - prev) * eta ** (-k)
        prev = point
    return total


def _rung_points(max_t: int, grace: int, eta: float) -> list[int]:
    points, r = [], grace
    while r < max_t:
        points.append(r)
        r = math.ceil(r * eta) if r * eta > r else r + 1
    return [*points, max_t]


def asha_trials(n: int, max_t: int, grace: int, eta: float) -> list[list[tuple[float, int]]]:
    """How far each of ``n`` trials in launch order gets under asynchronous successive halving (Ray's ASHA):
    a list of (probability, evaluations) outcomes per trial.

    A result at a rung continues when it is at least the (1 − 1/η) percentile of the results recorded there
    before it; against j earlier values in random order that happens with probability (j − (j − 1)(1 − 1/η)) /
    (j + 1) — 1 for the first, ½ for the second, → 1/η — so a small sweep promotes more than the synchronous
    1/η shares of :func:`asha_expected_evals` (to which this tends as n grows). j is the expected number of
    earlier trials recorded at the rung."""
    points = _rung_points(max_t, grace, eta)
    q = 1 - 1 / eta
    counts = [0.0] * len(points)
    out = []
    for _ in range(n):
        p = [1.0]
        for k in range(1, len(points)):
            j = counts[k - 1]
            p.append(p[-1] * (1 - j / 2 if j < 1 else (j - (j - 1) * q) / (j + 1)))
        for k, pk in enumerate(p):
            counts[k] += pk
        out.append([(pk - (p[k + 1] if k + 1 < len(p) else 0.0), points[k]) for k, pk in enumerate(p)])
    return out


def search_runs(n: int, evals: int, asha: bool, grace: int, eta: float) -> list[list[tuple[float, int]]]:
    """(probability, evaluations) outcomes of each of a cell's ``n`` search trials."""
    return asha_trials(n, evals, grace, eta) if asha else [[(1.0, evals)]] * n


#: A job's duration: seconds, or (probability, seconds) outcomes (an ASHA trial).
Duration = float | list[tuple[float, float]]


def mean_of(d: Duration) -> float:
    """Expected value of a duration (or of (probability, evaluations) outcomes)."""
    return float(d) if isinstance(d, (int, float)) else sum(p * v for p, v in d)


def _expected_max(placed: list[tuple[float, Duration]]) -> float:
    """E[max over jobs of start + duration] for independent jobs (exact for discrete outcomes)."""
    events = []  # (end time, job, probability mass)
    for i, (start, d) in enumerate(placed):
        for p, v in [(1.0, d)] if isinstance(d, (int, float)) else d:
            if p > 0:
                events.append((start + v, i, p))
    events.sort()
    cdf = [0.0] * len(placed)
    zeros, log_prod, prev_f, total = len(placed), 0.0, 0.0, 0.0
    for t, i, p in events:
        if cdf[i] == 0.0:
            zeros -= 1
        else:
            log_prod -= math.log(cdf[i])
        cdf[i] = min(1.0, cdf[i] + p)
        log_prod += math.log(cdf[i])
        f = math.exp(log_prod) if zeros == 0 else 0.0
        total += t * (f - prev_f)
        prev_f = f
    return total


def makespan(cells: Sequence[tuple[Sequence[Duration], Sequence[Duration]]], slots: int) -> float:
    """Expected makespan of a FIFO list schedule on ``slots``: search trials of all cells round robin; a cell's
    seed re-runs join the queue when its last search trial ends. ``cells``: (search durations, seed durations)
    per cell. Slots free up at each job's mean duration; the makespan is the expected latest end over the jobs'
    outcomes (a few long ASHA survivors launched late set it, which means alone would miss)."""
    queue: list[tuple[int, int, Duration]] = []  # (order, cell, duration)
    order = 0
    longest = max((len(s) for s, _ in cells), default=0)
    for i in range(longest):
        for c, (search, _) in enumerate(cells):
            if i < len(search):
                queue.append((order, c, search[i]))
                order += 1
    left = [len(s) for s, _ in cells]
    free = [0.0] * max(slots, 1)
    heapq.heapify(free)
    pending: list[tuple[float, int, int, Duration]] = []  # seed runs: (ready time, order, cell, duration)
    placed: list[tuple[float, Duration]] = []
    qi = 0
    running: list[tuple[float, int]] = []  # (end time, cell) of search trials
    while qi < len(queue) or pending or running:
        t = heapq.heappop(free)
        # search trials that ended by t may release their cell's seed runs
        while running and running[0][0] <= t:
            done, c = heapq.heappop(running)
            left[c] -= 1
            if left[c] == 0:
                for d in cells[c][1]:
                    heapq.heappush(pending, (done, order, c, d))
                    order += 1
        if pending and (pending[0][0] <= t or qi >= len(queue)):
            ready, _, c, d = heapq.heappop(pending)
            start = max(t, ready)
            heapq.heappush(free, start + mean_of(d))
            placed.append((start, d))
        elif qi < len(queue):
            _, c, d = queue[qi]
            qi += 1
            heapq.heappush(free, t + mean_of(d))
            heapq.heappush(running, (t + mean_of(d), c))
            placed.append((t, d))
        elif running:
            heapq.heappush(free, running[0][0])  # wait for the next search trial to end
        else:
            heapq.heappush(free, t)
            break
    return _expected_max(placed)


def trial_seconds(w: CellWork, speed: Speed, evals: float | None = None) -> float:
    """Expected seconds of one trial that runs ``evals`` of its evaluations (all of them by default)."""
    evals = w.evals if evals is None else evals
    steps = w.steps * evals / w.evals
    before = min(steps, w.select_step) if w.after_select != 1.0 else steps
    steps = before + (steps - before) * w.after_select  # in units of a step with every adapter
    train = steps * w.tokens_per_step / speed.train_tok_s * (speed.full_ft_factor if w.full_ft else 1.0)
    return speed.startup_s + train + evals * w.eval_tokens / speed.eval_tok_s
