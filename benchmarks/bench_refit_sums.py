"""The decoder refit's sums on a CPU: dense products, each row's pairs of active latents, or the sparse codes
times the dense ones.

``decoder_refit`` ends a run at GBA's defaults by reading the run's last rows in chunks and adding their
products (``RefitStatistics.add``): dense matrix products, or on a CPU, where the codes are sparse enough
(:func:`~gba_lens.saes.decoder_refit.sums_path`), the products of each row's active latents only or the sparse
codes times the dense ones. This times the three on the same chunks (4,096 rows, 512 inputs, the JumpReLU
gate's three products, random codes at a given L0), interleaved, and says which the module chooses; the choice
is right where it takes the fastest, or one within about 1.2x of it. A size where it is not is the sign that
the module's costs (``PAIR_COST``, ``ENTRY_COST``, ``OUTPUT_COST``) should move on this machine.

    python benchmarks/bench_refit_sums.py            # 512 / 1,024 / 4,096 latents at L0 10 / 30 / 60
    python benchmarks/bench_refit_sums.py --quick
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import _common

_common.setup_environment()

import torch  # noqa: E402

from gba_lens.saes import decoder_refit  # noqa: E402

ROWS = 4096
D_IN = 512


def random_codes(d_sae: int, l0: int, generator: torch.Generator) -> torch.Tensor:
    """[ROWS, d_sae] codes with a Poisson(l0) number of active latents per row, at random places."""
    active = torch.poisson(torch.full((ROWS,), float(l0)), generator=generator).long().clamp(1, d_sae)
    order = torch.rand(ROWS, d_sae, generator=generator).argsort(1)
    mask = order < active[:, None]
    return mask * (torch.rand(ROWS, d_sae, generator=generator) + 0.1)


PATHS = ("dense", "pairs", "sparse")


def measure(clock: _common.Clock, d_sae: int, l0: int, reps: int) -> tuple[dict[str, float], str]:
    """Median seconds of one chunk's sums on each path (timed in turn, each repetition in another order),
    and the path the module takes for it."""
    generator = torch.Generator().manual_seed(d_sae * 1000 + l0)
    codes = random_codes(d_sae, l0, generator)
    gates = (codes != 0).to(codes.dtype)
    targets = torch.randn(ROWS, D_IN, generator=generator)
    statistics = decoder_refit.RefitStatistics(d_sae, D_IN, "cpu", offsets=True)
    chooser = decoder_refit.sums_path

    def sums(path: str) -> Callable[[], None]:  # the sums on that path
        def run() -> None:
            decoder_refit.sums_path = lambda per_row, width: path
            try:
                statistics.add(codes, targets, gates)
            finally:
                decoder_refit.sums_path = chooser
        return run

    samples = _common.time_interleaved(clock, [sums(path) for path in PATHS], reps, warmup=1)
    return {path: into.median for path, into in zip(PATHS, samples, strict=True)}, chooser((gates != 0).sum(1), d_sae)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="512 and 1,024 latents, two repetitions")
    _common.add_clock_args(parser)
    args = parser.parse_args(argv)
    clock = _common.configure(args.threads, args.wall)
    widths, reps = ((512, 1024), 2) if args.quick else ((512, 1024, 4096), 5)
    print(f"# The decoder refit's sums per chunk ({clock.name}, {args.threads} thread(s), torch {torch.__version__})\n")
    costs = f"PAIR_COST {decoder_refit.PAIR_COST:,}, ENTRY_COST {decoder_refit.ENTRY_COST}, " \
            f"OUTPUT_COST {decoder_refit.OUTPUT_COST}"
    print(f"{ROWS:,} rows, {D_IN} inputs, the JumpReLU gate's products; {costs}.\n")
    print("| latents | L0 | dense s | pairs s | sparse s | the module takes | the fastest | taken / fastest |")
    print("|---:|---:|---:|---:|---:|---|---|---:|")
    for d_sae in widths:
        for l0 in (10, 30, 60):
            _common.log(f"refit sums: {d_sae} latents, L0 {l0}")
            seconds, taken = measure(clock, d_sae, l0, reps)
            fastest = min(seconds, key=seconds.__getitem__)
            print(f"| {d_sae:,} | {l0} | {seconds['dense']:.3f} | {seconds['pairs']:.3f} | {seconds['sparse']:.3f} | "
                  f"{taken} | {fastest} | {seconds[taken] / seconds[fastest]:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
