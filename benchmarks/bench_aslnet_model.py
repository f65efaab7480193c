"""Training/inference throughput of the ASLNet grade model on CPU, as a fraction of matmul peak.

Measures, with ``--threads`` intra-op threads (default 2, the whole dev machine):

1. peak: 2048² matmul GFLOP/s in fp32 and bf16 (best of ``--peak-reps``; AMX does bf16 here);
2. one training step (forward + backward + AdamW) of the paper's grade model (f = 32, basic
   [2, 2, 2, 2], 4 → 3) on (B, 4, 70, 70, 70), fp32 and under ``torch.autocast("cpu", bf16)``, in
   contiguous and ``channels_last_3d`` layout, for each batch size;
3. forward-only inference (eval, ``inference_mode``), the same grid plus bf16 weights;
4. ablations: AdamW for-each (default) instead of ``fused=True``, one thread, larger batch.

FLOPs are counted exactly, per configuration, with ``torch.utils.flop_counter.FlopCounterMode``
on the first warm-up step (convolutions and matmuls, forward and backward; the element-wise
GroupNorm/ReLU/AdamW work is not counted, as usual for "model FLOPs"). Achieved GFLOP/s = FLOPs /
median step time; the best step is shown too. The machine is shared: the 1-minute load average
is printed before and after, and peaks are re-measured at the end; compare only rows of one run.

Measured on the dev machine (2 vCPU Xeon with AVX-512 + AMX, idle, load ≈ 0.7 during the run):
peak fp32 386, bf16 2,520 GFLOP/s. Training step, batch 2: fp32 contiguous 155 GFLOP/s (40 %),
**fp32 channels_last_3d 215 GFLOP/s (56 % of fp32 peak, 142 ms/step, best honest config at
the paper's scale)**, bf16 autocast contiguous 239 GFLOP/s (fastest in absolute terms, 128 ms,
but 9.5 % of the AMX peak), bf16 channels_last_3d 200. Batch 1 (the paper's): fp32 CL 96 GFLOP/s
(25 %, 160 ms — barely faster than batch 2), bf16 123. Batch 4: fp32 CL 190, bf16 299. fused
AdamW vs for-each: 215 vs 199 (fp32 CL), 239 vs 184 (bf16). 1 thread: fp32 CL 116 GFLOP/s (59 %
of the 1-thread peak). Inference, batch 2: fp32 CL 271 (70 %), bf16-weights CL 602 (24 %).
Did not help (separate probes): ``torch.compile`` (fp32 CL 183, bf16 CL 211, bf16 240 GFLOP/s —
no gain after a 25 s compile), ``OMP_WAIT_POLICY=PASSIVE`` (170 vs 194), bf16 + channels_last
for training (GroupNorm backward on channels-last bf16 takes ~35 % of the step). bf16 stays far
below its AMX peak because GroupNorm/ReLU/max-pool/casts are memory-bound and convolutions with
few channels (4 → 32 stem, f = 32 stages) do not fill the AMX tiles. Under load from other users
the 2-thread numbers collapse (OpenMP spin-waiting on an oversubscribed core): rerun when idle.

Usage: ``python benchmarks/bench_aslnet_model.py [--steps 5] [--warmup 2] [--batches 2 1]``
(``--quick`` for a smoke run on a 32³ input). Runtime ≈ 35 s on the idle 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from vbiopsy.models import build_aslnet

#: "fp32"; "bf16" = fp32 weights under autocast; "bf16-weights" = weights cast to bf16 (inference only).
Precision = Literal["fp32", "bf16", "bf16-weights"]


@dataclass(frozen=True)
class Case:
    """One benchmark configuration."""

    mode: Literal["train", "infer"]
    batch: int
    precision: Precision
    channels_last: bool
    fused_adamw: bool = True
    threads: int = 2

    @property
    def label(self) -> str:
        layout = "CL3d" if self.channels_last else "NCDHW"
        extra = "" if self.mode == "infer" or self.fused_adamw else " foreach-AdamW"
        return f"{self.mode} B={self.batch} {self.precision} {layout}{extra} t={self.threads}"


@dataclass
class Result:
    """FLOPs (GFLOP per step), timed step durations (s) and the matching matmul peak (GFLOP/s)."""

    case: Case
    gflop: float
    seconds: list[float]
    peak: float

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def row(self) -> str:
        med, best = self.median, min(self.seconds)
        rate, best_rate = self.gflop / med, self.gflop / best
        return (f"{self.case.label:<44} {self.gflop:8.2f} {med * 1e3:8.1f} {best * 1e3:8.1f} "
                f"{rate:8.1f} {100 * rate / self.peak:6.1f} {best_rate:8.1f} {100 * best_rate / self.peak:6.1f}")


def matmul_peak(dtype: torch.dtype, reps: int, n: int = 2048) -> float:
    """Best-of-``reps`` GFLOP/s of an n×n @ n×n matmul (2n³ FLOPs) with the current thread count."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    out = torch.empty(n, n, dtype=dtype)
    for _ in range(3):
        torch.mm(a, b, out=out)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        times.append(time.perf_counter() - start)
    return 2 * n ** 3 / min(times) / 1e9


def measure_peaks(thread_counts: list[int], reps: int) -> dict[tuple[str, int], float]:
    """Matmul peak GFLOP/s per (precision, threads)."""
    peaks = {}
    for threads in thread_counts:
        torch.set_num_threads(threads)
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            peaks[(name, threads)] = matmul_peak(dtype, reps)
    return peaks


def _step_fn(case: Case, side: int) -> Callable[[], None]:
    """A closure running one step of ``case`` on a fresh seeded grade model."""
    torch.manual_seed(0)
    model: nn.Module = build_aslnet("grade")
    x = torch.randn(case.batch, 4, side, side, side)
    y = torch.randint(0, 3, (case.batch,))
    if case.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    autocast = case.precision == "bf16"
    if case.mode == "infer":
        model.eval()
        if case.precision == "bf16-weights":
            model, x = model.to(torch.bfloat16), x.to(torch.bfloat16)

        def infer() -> None:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                model(x)
        return infer
    model.train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-7, weight_decay=1e-7,
                                  fused=True if case.fused_adamw else None)

    def train() -> None:
        optimiser.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimiser.step()
    return train


def run_group(group: list[Case], side: int, warmup: int, steps: int,
              peaks: dict[tuple[str, int], float]) -> list[Result]:
    """Count each case's FLOPs on its first warm-up step, then time the cases round-robin.

    Interleaving (one step of every case per round) spreads the other users' load on this shared
    machine evenly over the cases instead of penalising whichever case ran during a burst.
    """
    closures, flops = [], []
    for case in group:
        torch.set_num_threads(case.threads)
        step = _step_fn(case, side)
        with FlopCounterMode(display=False) as counter:
            step()
        for _ in range(max(warmup - 1, 0)):
            step()
        closures.append(step)
        flops.append(counter.get_total_flops() / 1e9)
    seconds: list[list[float]] = [[] for _ in group]
    for _ in range(steps):
        for index, (case, step) in enumerate(zip(group, closures)):
            torch.set_num_threads(case.threads)
            start = time.perf_counter()
            step()
            seconds[index].append(time.perf_counter() - start)
    return [Result(case, gflop, times, peaks[("fp32" if case.precision == "fp32" else "bf16", case.threads)])
            for case, gflop, times in zip(group, flops, seconds)]


def cases(batches: list[int], threads: int) -> list[Case]:
    """The main grid, then the ablations."""
    grid = [Case(mode, b, p, cl, threads=threads) for mode in ("train", "infer") for b in batches
            for p in ("fp32", "bf16") for cl in (False, True)]
    grid += [Case("infer", b, "bf16-weights", cl, threads=threads) for b in batches for cl in (False, True)]
    big = max(batches) * 2
    grid += [Case("train", batches[0], "fp32", True, fused_adamw=False, threads=threads),
             Case("train", batches[0], "bf16", False, fused_adamw=False, threads=threads),
             Case("train", big, "fp32", True, threads=threads), Case("train", big, "bf16", False, threads=threads)]
    if threads > 1:
        grid += [Case("train", batches[0], "fp32", True, threads=1),
                 Case("train", batches[0], "bf16", False, threads=1)]
    return grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--peak-reps", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="32³ input, 1 timed step: smoke test only")
    args = parser.parse_args()
    side, steps = (32, 1) if args.quick else (70, args.steps)
    started = time.perf_counter()
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"threads {args.threads}, input {side}³, load avg before {os.getloadavg()[0]:.2f}")
    peaks = measure_peaks(sorted({1, args.threads}), args.peak_reps)
    header = (f"{'configuration':<44} {'GFLOP':>8} {'med ms':>8} {'best ms':>8} {'GFLOP/s':>8} {'%peak':>6} "
              f"{'best/s':>8} {'%peak':>6}")
    results: list[Result] = []
    for mode in ("train", "infer"):
        group = [case for case in cases(args.batches, args.threads) if case.mode == mode]
        results += run_group(group, side, args.warmup, steps, peaks)
        print(f"[{mode}: {len(group)} cases timed round-robin, load avg now {os.getloadavg()[0]:.2f}]")
    end_peaks = measure_peaks(sorted({1, args.threads}), args.peak_reps)
    print("matmul 2048² GFLOP/s (best of start, end): " + ", ".join(
        f"{k[0]} t={k[1]}: {peaks[k]:.0f}, {end_peaks[k]:.0f}" for k in sorted(peaks)))
    for key, value in end_peaks.items():
        peaks[key] = max(peaks[key], value)
    for result in results:  # % of the best peak seen: contention only ever lowers a measurement
        result.peak = peaks[("fp32" if result.case.precision == "fp32" else "bf16", result.case.threads)]
    print(header + "\n" + "-" * len(header))
    for result in results:
        print(result.row())
    print(f"load avg after {os.getloadavg()[0]:.2f}")
    for mode in ("train", "infer"):
        best = max((r for r in results if r.case.mode == mode and r.case.threads == args.threads),
                   key=lambda r: r.gflop / r.median)
        print(f"fastest {mode} (median): {best.case.label}: {best.gflop / best.median:.0f} GFLOP/s "
              f"({100 * best.gflop / best.median / best.peak:.0f} % of its peak), "
              f"{best.case.batch / best.median:.1f} samples/s")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
