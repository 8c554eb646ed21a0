"""Closed-form descent vs autograd of the energy: time, peak memory and FLOP rate (issue 2).

Both paths run the same block with the same stacked projection ``g @ [W^Q; W^K; xi]^T``; they
differ only in how ``dE/dg`` is obtained each step: spec §1.2/§1.3's closed form, or
``torch.autograd.grad`` of the energy (the authors' JAX and PyTorch approach; training then
needs ``create_graph=True``, a double backward).

Measured, in one run on one machine, for each preset:

- inference: ``steps`` descent steps under ``torch.no_grad``;
- training step: the same forward with grad enabled, then ``backward`` of a scalar loss to the
  parameters.

FLOPs of one descent step, counted analytically (matrix products only):
``4 B N D (2 H Y + K)`` for the stacked projection and back-projection plus ``6 B H N^2 Y`` for
the scores, ``Omega K`` and ``Omega^T Q``. A training step is counted as three forward passes
(forward + backward of every product). The machine's matmul rate is measured in the same run on
a square product of the same dtype.

Peak memory is the high-water mark of tensor memory allocated during the call, above what was
allocated before it (inputs and weights excluded): on CUDA from ``torch.cuda.max_memory_allocated``,
on CPU by replaying the allocation events that ``torch.profiler`` records with
``profile_memory=True`` (a separate, untimed run).

Run ``python benchmarks/bench_core.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import functools
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from energy_transformer import EnergyTransformer
from energy_transformer.text import counted

# name -> (tokens N, dim D, heads H, head_dim Y, memories K, batch B)
PRESETS: dict[str, tuple[int, int, int, int, int, int]] = {
    "small": (65, 128, 4, 32, 512, 32),
    "image": (197, 768, 12, 64, 3072, 8),
}
GRADIENTS = ("closed_form", "autograd")
FLOP_FORMULA = "4*B*N*D*(2*H*Y + K) + 6*B*H*N^2*Y"


def step_flops(batch: int, tokens: int, dim: int, heads: int, head_dim: int, memories: int) -> int:
    """Matrix-product FLOPs of one descent step (see :data:`FLOP_FORMULA`)."""
    projections = 4 * batch * tokens * dim * (2 * heads * head_dim + memories)
    attention = 6 * batch * heads * tokens**2 * head_dim
    return projections + attention


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


def time_calls(
    fns: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int,
    device: torch.device,
    clock: str = "wall",
) -> dict[str, list[float]]:
    """Seconds per call of each function, interleaved so that load drifts hit all alike."""
    now = CLOCKS[clock]
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            synchronize(device)
            start = now()
            fn()
            synchronize(device)
            times[name].append(now() - start)
    return times


def peak_memory(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes of tensor memory allocated by ``fn`` above what was allocated before it."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    allocations = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        if event.tag == _EventType.Allocation:
            allocations.append((event.start_time_ns, event.extra_fields.alloc_size))
        stack.extend(event.children)
    live = peak = 0
    for _, size in sorted(allocations):
        live += size
        peak = max(peak, live)
    return peak


def peak_memory_how(device: torch.device) -> str:
    """How :func:`peak_memory` measures on ``device``, for a report's header."""
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated above the allocation before the call"
    return "tensor allocations replayed from torch.profiler(profile_memory=True)"


def matmul_rate(
    size: int, dtype: torch.dtype, device: torch.device, repeats: int, clock: str = "wall"
) -> float:
    """Best FLOP/s of a ``size``-square matrix product in ``dtype`` on ``device``."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    fns = {"mm": lambda: torch.mm(a, b, out=out)}
    times = time_calls(fns, repeats, 2, device, clock)["mm"]
    return 2 * size**3 / min(times)


MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm")


def op_breakdown(fn: Callable[[], object], repeats: int = 1) -> tuple[float, float]:
    """``(all ops, matrix products)`` self CPU seconds of a profiled call of ``fn``.

    Self times add up to the call's operator time without double counting, so their split
    shows how much of a path is matrix products (the same FLOPs in both paths) and how much
    is everything else (elementwise, softmax, copies), the only part the paths can differ in.
    With ``repeats`` calls, each part is the smallest seen (the least disturbed reading).
    """
    from torch.profiler import ProfilerActivity, profile

    products, other = [], []
    for _ in range(repeats):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        events = prof.key_averages()
        mm = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS) / 1e6
        products.append(mm)
        other.append(sum(e.self_cpu_time_total for e in events) / 1e6 - mm)
    return min(products) + min(other), min(products)


@dataclass
class Row:
    preset: str
    mode: str
    seconds: dict[str, float]
    peak_bytes: dict[str, int]
    flops: float
    breakdown: dict[str, tuple[float, float]] | None = None


def bench_preset(
    name: str,
    sizes: tuple[int, int, int, int, int, int],
    args: argparse.Namespace,
    device: torch.device,
    dtype: torch.dtype,
) -> list[Row]:
    tokens, dim, heads, head_dim, memories, batch = sizes
    torch.manual_seed(0)
    # Mixed precision: weights and tokens stay float32; autocast runs the products in
    # ``dtype`` and the energies' logsumexp and sums in float32.
    block = EnergyTransformer(dim, heads, head_dim, memories).to(device=device)
    x = torch.randn(args.batch or batch, tokens, dim, device=device)
    low = dtype != torch.float32
    batch = x.shape[0]
    flops = args.steps * step_flops(batch, tokens, dim, heads, head_dim, memories)

    def inference(gradient: str) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=low):
                return block(x, steps=args.steps, alpha=0.1, gradient=gradient)

        return run

    def training(gradient: str) -> Callable[[], object]:
        def run() -> None:
            block.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=dtype, enabled=low):
                out = block(x, steps=args.steps, alpha=0.1, gradient=gradient)
            out.pow(2).mean().backward()

        return run

    rows = []
    for mode, make, mode_flops in (
        ("inference", inference, flops),
        ("training", training, 3 * flops),
    ):
        fns = {gradient: make(gradient) for gradient in GRADIENTS}
        times = time_calls(fns, args.repeats, args.warmup, device, args.clock)
        rows.append(
            Row(
                preset=name,
                mode=mode,
                seconds={g: min(t) for g, t in times.items()},
                peak_bytes={g: peak_memory(fn, device) for g, fn in fns.items()},
                flops=mode_flops,
                breakdown={g: op_breakdown(fn, 3) for g, fn in fns.items()}
                if args.breakdown
                else None,
            )
        )
    return rows


def format_table(rows: Sequence[Row], rate: float) -> str:
    lines = [
        "| preset | mode | closed form ms | autograd ms | speed-up | closed form GFLOP/s "
        "(% of matmul) | autograd GFLOP/s (% of matmul) | closed form peak MiB | "
        "autograd peak MiB | memory ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        cf, ag = row.seconds["closed_form"], row.seconds["autograd"]
        mcf, mag = row.peak_bytes["closed_form"], row.peak_bytes["autograd"]
        rate_cf, rate_ag = row.flops / cf, row.flops / ag
        lines.append(
            f"| {row.preset} | {row.mode} | {cf * 1e3:.1f} | {ag * 1e3:.1f} | {ag / cf:.2f}x | "
            f"{rate_cf / 1e9:.1f} ({100 * rate_cf / rate:.0f}%) | "
            f"{rate_ag / 1e9:.1f} ({100 * rate_ag / rate:.0f}%) | "
            f"{mcf / 2**20:.1f} | {mag / 2**20:.1f} | {mcf / max(mag, 1):.2f} |"
        )
    return "\n".join(lines)


def format_breakdown(rows: Sequence[Row]) -> str:
    """Where each path's operator time goes, and the speed-up the closed form would reach if
    everything but its matrix products were free (autograd's whole time over that)."""
    lines = [
        "| preset | mode | closed form: products / other ms | autograd: products / other ms "
        "| closed form products share | ceiling speed-up (autograd total / closed form "
        "products) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        (cf_all, cf_mm), (ag_all, ag_mm) = row.breakdown["closed_form"], row.breakdown["autograd"]
        lines.append(
            f"| {row.preset} | {row.mode} | {cf_mm * 1e3:.1f} / {(cf_all - cf_mm) * 1e3:.1f} | "
            f"{ag_mm * 1e3:.1f} / {(ag_all - ag_mm) * 1e3:.1f} | {100 * cf_mm / cf_all:.0f}% | "
            f"{ag_all / cf_mm:.2f}x |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--preset", choices=["small", "image", "both"], default="both")
    parser.add_argument("--batch", type=int, default=None, help="override the preset's batch")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed calls per path (best is kept)"
    )
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch)")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall: elapsed time; process: CPU time of this process (all threads), robust to "
        "other processes on a shared CPU; use it with --threads 1",
    )
    parser.add_argument(
        "--matmul-size", type=int, default=None, help="side of the reference square product"
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also profile one call per path (CPU): matrix-product vs other operator time",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.steps < 1 or args.warmup < 0:
        parser.error("need --repeats >= 1, --steps >= 1 and --warmup >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available on this machine")
    return args


def main(argv: Sequence[str] | None = None) -> str:
    """Run the benchmark, print and return the markdown report."""
    args = parse_args(argv)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    torch.set_num_threads(args.threads)
    matmul_size = args.matmul_size or (8192 if device.type == "cuda" else 2048)
    if args.clock == "process" and device.type == "cuda":
        raise SystemExit("--clock process measures CPU work: use it with --device cpu")
    if args.breakdown and device.type == "cuda":
        raise SystemExit("--breakdown profiles CPU operators: use it with --device cpu")
    measure_rate = functools.partial(
        matmul_rate, matmul_size, dtype, device, max(args.repeats, 3), args.clock
    )
    rate = measure_rate()

    presets = PRESETS if args.preset == "both" else {args.preset: PRESETS[args.preset]}
    rows = [
        row
        for name, sizes in presets.items()
        for row in bench_preset(name, sizes, args, device, dtype)
    ]
    # Measured again after the presets: on a shared CPU one reading may catch a busy moment.
    rate = max(rate, measure_rate())

    precision = (
        "float32"
        if dtype == torch.float32
        else f"{args.dtype} autocast (float32 weights and tokens; energies reduced in float32)"
    )
    if device.type == "cuda":
        machine = torch.cuda.get_device_name(device)
    else:
        threads = counted(args.threads, "torch thread")
        machine = f"{platform.processor() or platform.machine()}, {threads}"
    header = [
        f"torch {torch.__version__}, device {machine}, {precision}, {counted(args.steps, 'step')}, "
        f"alpha 0.1, best of {counted(args.repeats, 'timed call')} per path (interleaved)"
        f" after {args.warmup} warm-up, "
        f"{args.clock} clock",
        f"matmul rate: {rate / 1e9:.1f} GFLOP/s ({matmul_size}^3 {args.dtype} product, best "
        "of the readings before and after the presets in the same run)",
        f"FLOPs per step: {FLOP_FORMULA}; training counted as 3x the forward's FLOPs",
        f"peak memory: {peak_memory_how(device)}, inputs and weights excluded",
        "sizes: "
        + ", ".join(
            f"{n} N={s[0]} D={s[1]} H={s[2]} Y={s[3]} K={s[4]} B={args.batch or s[5]}"
            for n, s in presets.items()
        ),
    ]
    report = "\n".join(f"- {line}" for line in header) + "\n\n" + format_table(rows, rate)
    if args.breakdown:
        report += (
            "\n\nOperator self time per path (torch.profiler, CPU; each part the smallest of 3"
            " profiled calls):\n\n" + format_breakdown(rows)
        )
    print(report)
    return report


if __name__ == "__main__":
    main()
