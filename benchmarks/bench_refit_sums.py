"""The decoder refit's sums on a CPU: each row's pairs of active latents against the dense products.

``decoder_refit`` ends a run at GBA's defaults by reading the run's last rows in chunks and adding their
products (``RefitStatistics.add``): dense matrix products, or on a CPU, where the codes are sparse enough
(``SPARSE_COST``), the products of each row's active latents only. This times both on the same chunks
(4,096 rows, 512 inputs, the JumpReLU gate's three products, random codes at a given L0), interleaved,
and says which the module chooses; the choice is right where it takes the faster one. A size where it is
not is the sign that ``SPARSE_COST`` should move on this machine.

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


def measure(clock: _common.Clock, d_sae: int, l0: int, reps: int) -> tuple[float, float, float, bool]:
    """Median seconds of the dense and the sparse sums of one chunk, their paired ratio, and whether the
    module takes the sparse sums for it."""
    generator = torch.Generator().manual_seed(d_sae * 1000 + l0)
    codes = random_codes(d_sae, l0, generator)
    gates = (codes != 0).to(codes.dtype)
    targets = torch.randn(ROWS, D_IN, generator=generator)
    statistics = decoder_refit.RefitStatistics(d_sae, D_IN, "cpu", offsets=True)
    cost = decoder_refit.SPARSE_COST

    def sums(path_cost: int) -> Callable[[], None]:  # the sums with SPARSE_COST at path_cost
        def run() -> None:
            decoder_refit.SPARSE_COST = path_cost
            try:
                statistics.add(codes, targets, gates)
            finally:
                decoder_refit.SPARSE_COST = cost
        return run

    dense, sparse = _common.time_pair(clock, sums(10**15), sums(0), reps, warmup=1)
    chooses_sparse = decoder_refit.pairs_cost_less((gates != 0).sum(1), d_sae)
    return dense.median, sparse.median, _common.paired_ratio(dense.times, sparse.times), chooses_sparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="512 and 1,024 latents, two repetitions")
    _common.add_clock_args(parser)
    args = parser.parse_args(argv)
    clock = _common.configure(args.threads, args.wall)
    widths, reps = ((512, 1024), 2) if args.quick else ((512, 1024, 4096), 5)
    print(f"# The decoder refit's sums per chunk ({clock.name}, {args.threads} thread(s), torch {torch.__version__})\n")
    print(f"{ROWS:,} rows, {D_IN} inputs, the JumpReLU gate's products; SPARSE_COST = {decoder_refit.SPARSE_COST:,}.\n")
    print("| latents | L0 | dense s | pairs s | dense / pairs | the module takes | the faster |")
    print("|---:|---:|---:|---:|---:|---|---|")
    for d_sae in widths:
        for l0 in (10, 30, 60):
            _common.log(f"refit sums: {d_sae} latents, L0 {l0}")
            dense, sparse, ratio, chooses_sparse = measure(clock, d_sae, l0, reps)
            print(f"| {d_sae:,} | {l0} | {dense:.3f} | {sparse:.3f} | {ratio:.2f}x | "
                  f"{'pairs' if chooses_sparse else 'dense'} | {'pairs' if ratio > 1 else 'dense'} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
