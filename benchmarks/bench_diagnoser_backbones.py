"""Adaptive-Diagnoser cost per backbone on CPU: parameters, seconds per training step, peak memory.

For every registered backbone (paper Table 3: densenet, resnet, swin, vit, efficient3d) and every
(width, input side) pair — by default the CPU demo (``tiny`` at 1×48³) and the paper-like network
(``base``, the standard architectures, at 1×96³) — the full :class:`AdaptiveDiagnoser` (MCA on, 4
classes, a soft spherical prior) runs ``--warmup`` then ``--steps`` timed steps of forward +
cross-entropy + backward (no optimiser step) at batch 2 on ``--threads`` threads. Each configuration
runs in its own process, so its peak resident memory (``ru_maxrss``) is its own; "step MB" is that
peak minus the resident memory just before the first step (activations, gradients, allocator
caches), "peak MB" includes the interpreter, torch and the weights. The machine is shared: the load
average is printed; compare rows of one run only.

Measured on the shared 2-core dev machine (load average 4–8 from other users: the 2-thread times are
inflated by OpenMP spin-waiting and vary ±2×; the 1-thread column is the steadier one), median s/step:

=========== ============ ====== ========= ========= ===== ============ ====== ========= ========= ======
backbone    tiny params  grid   48³ 2 th  48³ 1 th  step  base params  grid   96³ 2 th  96³ 1 th  step
=========== ============ ====== ========= ========= ===== ============ ====== ========= ========= ======
densenet         9,272   3³     2.56      0.02      16 MB   11,776,388   3³   11.6      4.4      963 MB
resnet          59,828   3³     2.59      0.04      16 MB    8,333,028   3³    2.8      0.95     274 MB
swin           108,095   3³     1.71      0.58     253 MB    8,364,022   3³   10.4     42.9     5.2 GB
vit            237,280   3³     0.67      0.01      14 MB   88,642,756   6³    2.0      3.8      643 MB
efficient3d    165,770   3³     2.53      0.40      72 MB    5,519,424   3³   42.6      5.0      1.1 GB
=========== ============ ====== ========= ========= ===== ============ ====== ========= ========= ======

(params include the MCA and the 4-class head; "step" = extra resident memory of a training step.)

Usage: ``python benchmarks/bench_diagnoser_backbones.py [--cases tiny:48 base:96] [--steps 3]``.
``swin`` and ``vit`` need MONAI's optional ``einops``; without it their rows say so.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

from vbiopsy.errors import ConfigError
from vbiopsy.models.backbones import BACKBONES
from vbiopsy.models.diagnoser import AdaptiveDiagnoser

BATCH = 2
CLASSES = 4


def _rss_mb() -> float:
    """Current resident set size of this process in MB (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _spherical_prior(side: int) -> torch.Tensor:
    """A soft ball prior (B, 1, side³) around a point off-centre, like a Tumor-Localizer output."""
    axis = torch.linspace(-1, 1, side)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"))
    distance = ((grid - torch.tensor([0.3, -0.2, 0.1])[:, None, None, None]) ** 2).sum(0).sqrt()
    return torch.sigmoid((0.35 - distance) * 20).expand(BATCH, 1, side, side, side).contiguous()


def measure(name: str, width: str, side: int, warmup: int, steps: int, threads: int) -> dict[str, object]:
    """One configuration in this process: parameters, step seconds, memory."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    options: dict[str, object] = {"width": width}
    if name == "vit":
        options["img_size"] = side
    try:
        model = AdaptiveDiagnoser(name, 1, CLASSES, backbone_options=options).train()
    except ConfigError as error:
        return {"error": str(error)}
    image, prior = torch.randn(BATCH, 1, side, side, side), _spherical_prior(side)
    target = torch.arange(BATCH) % CLASSES
    with torch.no_grad():
        grid = tuple(model.backbone(image[:1]).shape[2:])
    before = _rss_mb()

    def step() -> float:
        start = time.perf_counter()
        model.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(image, prior), target).backward()
        return time.perf_counter() - start

    for _ in range(warmup):
        step()
    seconds = [step() for _ in range(steps)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return {"params": sum(p.numel() for p in model.parameters()), "grid": grid,
            "median_s": statistics.median(seconds), "best_s": min(seconds), "peak_mb": peak,
            "step_mb": peak - before}


def run_child(name: str, width: str, side: int, args: argparse.Namespace) -> dict[str, object]:
    """``measure`` in a fresh interpreter (own peak memory); an error or timeout becomes a row note."""
    command = [sys.executable, __file__, "--child", name, width, str(side), "--warmup", str(args.warmup),
               "--steps", str(args.steps), "--threads", str(args.threads)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"over {args.timeout} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1][:80]}
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["tiny:48", "base:96"], help="width:side pairs")
    parser.add_argument("--backbones", nargs="+", default=sorted(BACKBONES))
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=600, help="seconds per configuration")
    parser.add_argument("--child", nargs=3, metavar=("NAME", "WIDTH", "SIDE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, width, side = args.child
        print(json.dumps(measure(name, width, int(side), args.warmup, args.steps, args.threads)))
        return
    print(f"torch {torch.__version__}, {args.threads} threads, batch {BATCH}, load {os.getloadavg()[0]:.2f}")
    print(f"{'backbone':<12} {'width':<6} {'input':>6} {'params':>12} {'F grid':>9} {'s/step':>8} {'best':>8} "
          f"{'peak MB':>8} {'step MB':>8}")
    for case in args.cases:
        width, side = case.split(":")
        for name in args.backbones:
            row = run_child(name, width, int(side), args)
            head = f"{name:<12} {width:<6} {side + '³':>6}"
            if "error" in row:
                print(f"{head} {row['error']}")
                continue
            grid = "×".join(map(str, row["grid"]))  # type: ignore[call-overload]
            print(f"{head} {row['params']:>12,} {grid:>9} {row['median_s']:>8.2f} {row['best_s']:>8.2f} "
                  f"{row['peak_mb']:>8.0f} {row['step_mb']:>8.0f}", flush=True)
    print(f"load after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
