"""scripts/lm_gaps.py: GBA's gaps to the baselines' frontiers and their means over seeds, on runs
whose answer is known."""

import json

import pytest


def _run(method, seed, l0, ce, ev, hook="blocks.1.hook_resid_pre", **extra):
    return {"hook": hook, "method": method, "seed": seed, "tokens": 400_000, "l0": l0,
            "ce_loss_score": ce, "explained_variance": ev, **extra}


def _sweep(seed, offset=0.0):
    """TopK at L0 8 and 16 with CE and EV linear in L0 (so log and linear interpolation differ)."""
    return [_run("topk", seed, 8.0, 0.90 + offset, 0.80 + offset), _run("topk", seed, 16.0, 0.98 + offset, 0.96 + offset)]


def _interpolate(log_l0):
    from gba_lens.experiments.compare.methods import interpolate_at_l0
    return lambda points, metric, l0: interpolate_at_l0(points, metric, l0, log_l0=log_l0)


def test_a_run_is_read_against_its_own_seeds_sweep_at_its_l0(script):
    gaps = script("lm_gaps").gaps
    runs = _sweep(0) + _sweep(1, offset=0.01)
    gba = _run("gba-valley-find-l0", 1, 12.0, 0.95, 0.90)
    found = gaps(gba, runs + [gba], _interpolate(False))
    assert found["topk"] == pytest.approx((0.95 - 0.95, 0.90 - 0.89))   # seed 1's sweep at L0 12: 0.95 / 0.89
    assert found["batchtopk"] is None and found["matryoshka"] is None   # no sweep: n/a


def test_seed_means_average_only_the_seeds_inside_the_sweep(script):
    seed_means = script("lm_gaps").seed_means
    runs = _sweep(0) + _sweep(1)
    runs += [_run("gba-per-token", 0, 12.0, 0.95, 0.90), _run("gba-per-token", 1, 10.0, 0.94, 0.86),
             _run("gba-per-token", 2, 12.0, 0.99, 0.99),            # seed 2 has no sweep
             _run("gba-per-token", 0, 40.0, 0.99, 0.99, hook="blocks.1.hook_mlp_out")]
    lines = seed_means(runs, _interpolate(False))
    assert len(lines) == 2                                           # one per hook
    resid = next(line for line in lines if "resid_pre" in line)
    # seed 0 at L0 12 (0.94 / 0.88): +0.01 / +0.02; seed 1 at L0 10 (0.92 / 0.84): +0.02 / +0.02
    assert "topk +0.0150 / +0.0200 (2 of 3 seeds)" in resid
    assert "seeds [0, 1, 2]" in resid and "L0 11.33" in resid
    assert "topk n/a" in next(line for line in lines if "mlp_out" in line)


def test_log_l0_reads_the_chord_in_log_l0(script):
    gaps = script("lm_gaps").gaps
    gba = _run("gba", 0, 12.0, 0.95, 0.90)
    linear = gaps(gba, _sweep(0), _interpolate(False))["topk"]
    logged = gaps(gba, _sweep(0), _interpolate(True))["topk"]
    assert linear[0] == pytest.approx(0.95 - 0.94)
    assert logged[0] == pytest.approx(0.95 - (0.90 + 0.08 * 0.5849625), abs=1e-6)   # log2(1.5) of the way


def test_main_prints_a_line_per_run_or_per_method(script, tmp_path, capsys):
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _sweep(0) + [_run("gba", 0, 12.0, 0.95, 0.90)]))
    script("lm_gaps").main([str(path)])
    assert "seed 0" in capsys.readouterr().out
    script("lm_gaps").main([str(path), "--mean"])
    assert "(1 of 1 seeds)" in capsys.readouterr().out
