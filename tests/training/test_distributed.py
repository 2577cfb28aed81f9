"""Data parallel under torchrun (gloo, 2 CPU processes): the same SAE as one process, exact
resumes after a failed rank, and failures that end the run instead of hanging it."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

import dist_worker
from gba_lens.data.activations import save_activations
from gba_lens.data.batches import SeededBatches, TensorBatches
from gba_lens.saes.l0_control import FOUND_START
from gba_lens.training.distributed import PreSharded, shard_batches
from gba_lens.training.trainer import latest_checkpoint

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("dist_worker.py")

# Every torch wheel for Linux (the pinned CPU wheel included) ships gloo; only a custom build without
# it cannot run these, and says so. Under pytest-xdist (``make test``: ``--dist loadfile``) this file's
# tests run on one worker, one two-process launch at a time.
pytestmark = pytest.mark.skipif(not dist.is_gloo_available(), reason="torch built without gloo")


def _torchrun(args: list[str], timeout_s: float = 60, wall_s: float = 300) -> tuple[int, str, float]:
    """Run ``torchrun --nproc_per_node 2 args``; return (exit code, stderr, seconds)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "GBA_LENS_DIST_TIMEOUT": str(timeout_s)}
    env.pop("WORLD_SIZE", None)
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args],
        env=env, capture_output=True, text=True, timeout=wall_s, cwd=REPO,
    )
    return proc.returncode, proc.stderr, time.monotonic() - start


TWO_RANK_RUNS = {
    "sparse-step": ["--sparse-step", "on"],
    "valley-geometric": ["--valley", "--targets", "geometric"],
    "valley-valleys": ["--valley", "--targets", "valleys"],
    "target-l0": ["--target-l0", "4"],
    "find-l0": ["--find-l0"],
    "data-start": ["--encoder-init", "data"],
    "firing-worth": ["--firing-worth", "1.0"],
    "activation-bias": ["--activation-bias"],
    "refit": ["--decoder-refit"],
    "refit-relative": ["--decoder-refit", "--refit-error", "relative"],
    "refit-checked": ["--decoder-refit", "--checked-refit"],
    "refit-sparse": ["--decoder-refit", "--sparse-refit"],
    "per-token": ["--defaults", "--input-norm", "per_token"],
    "search": ["--search"],
    "multi": ["--multi"],
}
"""The worker's options of each SAE (``--multi``: two) whose two-rank training a test compares with one
process's."""


@pytest.fixture(scope="module")
def two_rank_states(tmp_path_factory):
    """Each TWO_RANK_RUNS entry's final state dict as two ranks train it, all from one torchrun launch
    (the worker's --runs; one launch per entry would spend most of each run importing SAELens twice)."""
    out = tmp_path_factory.mktemp("two_ranks")
    runs = out / "runs.json"
    runs.write_text(json.dumps(TWO_RANK_RUNS))
    code, err, _ = _torchrun([str(WORKER), str(out), "--runs", str(runs)], wall_s=900)
    assert code == 0, err[-3000:]
    return {name: load_file(str(out / name / "state.safetensors")) for name in TWO_RANK_RUNS}


@pytest.fixture(scope="module")
def single_process_state(tmp_path_factory):
    """The SAE one process trains on the worker's stream (global batch B, no interruption)."""
    sae = dist_worker.make_sae()
    dist_worker.train_sae(sae, dist_worker.make_stream(), dist_worker.make_cfg(str(tmp_path_factory.mktemp("one"))))
    return sae.state_dict()


@pytest.fixture
def activations_file(tmp_path):
    acts = torch.relu(torch.randn(2048, 12, generator=torch.Generator().manual_seed(0))) * 3
    path = tmp_path / "acts.safetensors"
    save_activations(path, acts)
    return path, acts


REFIT_ATOL = 5e-5
"""The decoder refit's products are float32 sums over each chunk's rows, and a rank's chunks hold other rows
than one process's: the decoder and offsets they solve to agree to that rounding."""


SPARSE_REFIT_ATOL = 5e-3
"""... and over ``MAX_LATENTS``, where conjugate gradients stop once an iteration lowers the error by under
``CG_TOLERANCE`` of the rows' energy, to what that leaves of directions the error barely depends on."""


def _atol(key: str, refitted: bool) -> float:
    return REFIT_ATOL if refitted and key.split(".")[-1] in ("W_dec", "b_act") else 1e-6


def _assert_same_sae(state: dict[str, torch.Tensor], reference: dict[str, torch.Tensor],
                     refitted: bool = False) -> None:
    assert state.keys() == reference.keys()
    for key in reference:  # weights, GBA biases, b_pre, input scale, controller statistics
        assert torch.allclose(state[key], reference[key], atol=_atol(key, refitted)), key
    assert reference["b_enc"].min() < 0  # the biases moved: the comparison is not trivial


def test_shards_of_a_global_batch_are_disjoint_and_cover_it():
    acts = torch.randn(96, 4)
    for stream in (TensorBatches(acts, 16, seed=1), SeededBatches(lambda n: torch.randn(n, 4), 16, seed=1)):
        stream.seek(7)
        whole = next(stream)
        parts = []
        for r in range(2):
            shard = shard_batches(stream, r, 2, 16)
            shard.seek(7)
            parts.append(next(shard))
        assert torch.equal(torch.cat(parts), whole)
    assert shard_batches(PreSharded(TensorBatches(acts, 8)), 0, 2, 16).__class__ is PreSharded
    with pytest.raises(ValueError, match="divisible by the number of processes"):
        shard_batches(TensorBatches(acts, 15), 0, 2, 15)


def test_failed_rank_stops_the_run_and_a_resume_matches_one_process(tmp_path, single_process_state):
    out = str(tmp_path / "run")
    code, err, seconds = _torchrun([str(WORKER), out, "--fail-rank", "1", "--fail-at", "14"])
    assert code != 0
    assert "gba-lens: rank 1 of 2 failed at step 14" in err, err[-3000:]
    assert seconds < 240  # start-up dominates; the peer's failure is noticed at once
    assert latest_checkpoint(Path(out) / "checkpoints").name == "step_000000012"
    assert not (Path(out) / "state.safetensors").exists()

    code, err, _ = _torchrun([str(WORKER), out])  # same command: resumes from step 12 on both ranks
    assert code == 0, err[-3000:]
    _assert_same_sae(load_file(str(Path(out) / "state.safetensors")), single_process_state)


def test_gbas_defaults_resume_a_failed_two_rank_run_mid_window_as_one_process_trains(tmp_path, monkeypatch):
    """With valley thresholds (on by default) the checkpoint of step 12 falls inside a histogram
    window: every rank holds the global window's counts (each batch's are all-reduced before they
    are added), so rank 0's checkpoint resumes on both ranks as one process trains."""
    from gba_lens.saes import valley_thresholds

    monkeypatch.setattr(valley_thresholds, "WINDOW_SAMPLES", dist_worker.DEFAULTS_VALLEY_WINDOW)
    sae = dist_worker.make_sae(valley=None, find_l0=None)  # GBA's defaults (decoder_refit aside: dist_worker)
    assert sae.valley_thresholds is not None and sae.bias_adaptation.coactivation is not None
    dist_worker.train_sae(sae, dist_worker.make_stream(), dist_worker.make_cfg(str(tmp_path / "one")))
    out = str(tmp_path / "run")
    code, err, _ = _torchrun([str(WORKER), out, "--defaults", "--fail-rank", "1", "--fail-at", "14"])
    assert code != 0 and "rank 1 of 2 failed at step 14" in err, err[-3000:]
    checkpoint = latest_checkpoint(Path(out) / "checkpoints")
    assert checkpoint.name == "step_000000012"
    saved = load_file(str(checkpoint / "sae_weights.safetensors"))
    assert saved["valley_thresholds.n_samples"].item() == 2 * dist_worker.BATCH  # mid-window
    assert saved["valley_thresholds.histogram"].sum() == 2 * dist_worker.BATCH * dist_worker.D_SAE  # both ranks' rows
    code, err, _ = _torchrun([str(WORKER), out, "--defaults"])
    assert code == 0, err[-3000:]
    _assert_same_sae(load_file(str(Path(out) / "state.safetensors")), sae.state_dict())


def test_sparse_step_on_two_ranks_trains_the_one_process_sae(two_rank_states, single_process_state):
    """GBA's sparse step under DDP (gradients reduced through its custom backward, sparse feature
    activations in the step output) ends where one process with the dense step does."""
    state = two_rank_states["sparse-step"]
    assert 0 < state["step_density"] < 1
    assert state.keys() == single_process_state.keys()
    for key, value in single_process_state.items():
        assert torch.allclose(state[key], value, rtol=1e-4, atol=1e-5), key
    assert single_process_state["b_enc"].min() < 0


def _one_process_and_two_ranks(tmp_path: Path, two_rank_states: dict, run: str, **sae_options) -> tuple[dict, dict]:
    """The state dict of the worker's SAE with ``sae_options`` trained in this process, and the one
    two ranks trained with ``TWO_RANK_RUNS[run]``."""
    sae = dist_worker.make_sae(**sae_options)
    dist_worker.train_sae(sae, dist_worker.make_stream(), dist_worker.make_cfg(str(tmp_path / "one")))
    return sae.state_dict(), two_rank_states[run]


@pytest.mark.parametrize("targets", ["geometric", "valleys"])
def test_valley_thresholds_on_two_ranks_train_the_one_process_sae(tmp_path, two_rank_states, monkeypatch, targets):
    """The valley thresholds' histograms, peaks and window counts are the global batch's on every
    rank (all-reduced before each window is applied), as one process sees them; so are the group
    targets that follow the valleys."""
    from gba_lens.saes import target_adaptation, valley_thresholds

    monkeypatch.setattr(valley_thresholds, "WINDOW_SAMPLES", dist_worker.VALLEY_WINDOW)
    monkeypatch.setattr(target_adaptation, "MIN_VALLEY_FRACTION", dist_worker.VALLEY_GROUP_FRACTION)
    reference, state = _one_process_and_two_ranks(tmp_path, two_rank_states, f"valley-{targets}", valley=True,
                                                  targets=targets)
    _assert_same_sae(state, reference)
    assert "valley_thresholds.histogram" in state
    assert not torch.equal(reference["valley_thresholds.scale"], torch.ones(dist_worker.D_SAE))  # windows ran
    initial = dist_worker.make_sae().bias_adaptation.target
    assert torch.equal(reference["bias_adaptation.target"], initial) is (targets == "geometric")  # moved


def test_a_requested_l0_on_two_ranks_trains_the_one_process_sae(tmp_path, two_rank_states):
    """The L0 controller reads the rule's global window frequencies, so its L0 average and target
    scale evolve identically on every rank, as in one process."""
    reference, state = _one_process_and_two_ranks(tmp_path, two_rank_states, "target-l0", target_l0=4.0)
    _assert_same_sae(state, reference)
    assert reference["bias_adaptation.l0_control.l0_average"].item() > 0  # the controller read the windows


def test_find_l0_on_two_ranks_trains_the_one_process_sae(tmp_path, two_rank_states):
    """find_l0's co-activation sums are all-reduced and its denominator drawn alike on every rank, so
    the target scale moves as in one process (two checks in this run)."""
    reference, state = _one_process_and_two_ranks(tmp_path, two_rank_states, "find-l0", find_l0=True)
    _assert_same_sae(state, reference)
    assert reference["bias_adaptation.l0_control.log_scale"].item() != math.log(FOUND_START)  # the checks moved it


def test_a_data_start_on_two_ranks_trains_the_one_process_sae(tmp_path, two_rank_states, single_process_state):
    """``encoder_init="data"`` draws the neurons' starts from the global first batch (gathered in rank
    order) with its own seeded generator, so every rank starts, and trains, as one process."""
    reference, state = _one_process_and_two_ranks(tmp_path, two_rank_states, "data-start", encoder_init="data")
    _assert_same_sae(state, reference)
    random_start = single_process_state  # the same SAE and stream from random directions
    assert not torch.allclose(reference["W_enc"], random_start["W_enc"], atol=1e-3)  # it started elsewhere


def test_firing_worth_on_two_ranks_trains_the_one_process_sae(tmp_path, two_rank_states):
    """The worth of the firings is summed over every rank's rows before the averages move, so each
    rank holds the averages (and scales the targets) of one process (one measurement in this run, from
    ``firing_worth.START`` of it; a rank that kept its own rows' sums would hold other averages)."""
    reference, state = _one_process_and_two_ranks(tmp_path, two_rank_states, "firing-worth", firing_worth=1.0)
    _assert_same_sae(state, reference)
    assert reference["bias_adaptation.firing_worth.checks"].item() == 1
    assert reference["bias_adaptation.firing_worth.measured"].sum() > dist_worker.D_SAE // 2
    assert len(reference["bias_adaptation.firing_worth.worth"].unique()) > dist_worker.D_SAE // 2


def test_activation_offsets_on_two_ranks_train_the_one_process_sae(tmp_path, two_rank_states):
    """The offsets are weights trained by gradient: DDP averages their gradients over the ranks, so
    every rank holds one process's offsets (and thresholds)."""
    reference, state = _one_process_and_two_ranks(tmp_path, two_rank_states, "activation-bias", activation_bias=True)
    _assert_same_sae(state, reference)
    assert reference["b_act"].abs().max() > 1e-3  # they were trained


@pytest.mark.parametrize("refit_error", [None, "relative"])
def test_the_decoder_refit_on_two_ranks_gives_the_one_process_decoder(tmp_path, two_rank_states, refit_error):
    """Each rank keeps its rows of the run's last steps; the refit's sums are all-reduced, so every
    rank solves one process's system, to the rounding of its chunks' float32 products, and holds its
    decoder and firing offsets (and the same thresholds); each row weighted by its own norm with the
    relative error."""
    reference, state = _one_process_and_two_ranks(
        tmp_path, two_rank_states, f"refit-{refit_error}" if refit_error else "refit", decoder_refit=True,
        refit_error=refit_error)
    _assert_same_sae(state, reference, refitted=True)
    assert reference["b_act"].abs().max() > 1e-3  # the offsets were fitted
    plain = dist_worker.make_sae()
    dist_worker.train_sae(plain, dist_worker.make_stream(), dist_worker.make_cfg(str(tmp_path / "plain")))
    assert (plain.W_dec - reference["W_dec"]).abs().max() > 1e-3  # the refit moved the decoder
    if refit_error == "relative":  # and the rows' weights moved it from the absolute error's
        absolute = dist_worker.make_sae(decoder_refit=True)
        dist_worker.train_sae(absolute, dist_worker.make_stream(), dist_worker.make_cfg(str(tmp_path / "absolute")))
        assert (absolute.W_dec - reference["W_dec"]).abs().max() > 1e-3


def test_the_refit_on_sparse_codes_on_two_ranks_gives_the_one_process_sae(tmp_path, two_rank_states, monkeypatch):
    """Over ``MAX_LATENTS`` (here 16) each rank keeps its rows' sparse codes and every product of the conjugate
    gradients is all-reduced: every rank iterates as one process does, to the rounding of the sums' order."""
    from gba_lens.saes import decoder_refit

    monkeypatch.setattr(decoder_refit, "MAX_LATENTS", dist_worker.SPARSE_REFIT_ABOVE)
    reference, state = _one_process_and_two_ranks(tmp_path, two_rank_states, "refit-sparse", decoder_refit=True)
    for key in ("W_dec", "b_act"):  # the iterations stop at CG_TOLERANCE of the error, not at the rounding
        assert torch.allclose(state[key], reference[key], atol=SPARSE_REFIT_ATOL), key
        state[key] = reference[key]
    _assert_same_sae(state, reference)
    dense = two_rank_states["refit"]
    # the dense sums' problem, another solver (the offsets' pull differs: about 4% of the decoder's norm apart)
    assert (dense["W_dec"] - reference["W_dec"]).norm() < 0.08 * reference["W_dec"].norm()
    assert not torch.equal(dense["W_dec"], reference["W_dec"])


def test_a_checked_refit_on_two_ranks_gives_the_one_process_sae(tmp_path, two_rank_states, monkeypatch):
    """Every refit checked: each rank holds out every 8th of its rows (its share of a batch, 32, is a multiple
    of 8: the rows one process holds out), refits a copy on the others with all-reduced sums, and reads the
    held-out rows' errors as all-reduced sums, so every rank takes the copy as one process does."""
    from gba_lens.saes import refit_check
    from gba_lens.training import refit_window

    monkeypatch.setattr(refit_check, "TRUSTED_FIRINGS", dist_worker.CHECKED)
    refits, refit = [], refit_window.refit_decoder
    monkeypatch.setattr(refit_window, "refit_decoder", lambda sae, rows: refits.append(refit(sae, rows)) or refits[-1])
    reference, state = _one_process_and_two_ranks(tmp_path, two_rank_states, "refit-checked", decoder_refit=True)
    assert refits[0]["checked"] == 1 and refits[0]["refitted"] == 1  # the copy was better, and taken
    _assert_same_sae(state, reference, refitted=True)
    unchecked = two_rank_states["refit"]
    assert (unchecked["W_dec"] - reference["W_dec"]).abs().max() > 1e-3  # fitted on seven eighths of the rows


def test_a_failed_two_rank_run_resumed_inside_its_refit_rows_refits_as_one_process(tmp_path):
    """The refit reads every row of this run, so the resumption at step 12 lies inside them: each rank seeks its
    stream back and reads its rows of steps 0-11 again, and the ranks refit as one uninterrupted process does."""
    sae = dist_worker.make_sae(decoder_refit=True)
    dist_worker.train_sae(sae, dist_worker.make_stream(), dist_worker.make_cfg(str(tmp_path / "one")))
    out = str(tmp_path / "run")
    code, err, _ = _torchrun([str(WORKER), out, "--decoder-refit", "--fail-rank", "1", "--fail-at", "14"])
    assert code != 0 and "rank 1 of 2 failed at step 14" in err, err[-3000:]
    assert latest_checkpoint(Path(out) / "checkpoints").name == "step_000000012"
    code, err, _ = _torchrun([str(WORKER), out, "--decoder-refit"])
    assert code == 0, err[-3000:]
    assert "decoder_refit reads the rows since the run resumed" not in err
    _assert_same_sae(load_file(str(Path(out) / "state.safetensors")), sae.state_dict(), refitted=True)


def test_per_token_inputs_with_the_defaults_on_two_ranks_train_the_one_process_sae(tmp_path, two_rank_states,
                                                                                   monkeypatch):
    """Each rank divides its own rows by their norms; the first batch's scale and centre, the valley
    histograms and find_l0's checks (its own code re-encoded in the normalised units) are the global
    batch's, so every rank holds one process's SAE."""
    from gba_lens.saes import valley_thresholds

    monkeypatch.setattr(valley_thresholds, "WINDOW_SAMPLES", dist_worker.DEFAULTS_VALLEY_WINDOW)
    reference, state = _one_process_and_two_ranks(tmp_path, two_rank_states, "per-token", valley=None, find_l0=None,
                                                  input_norm="per_token")
    _assert_same_sae(state, reference)
    unit_mean = dist_worker.make_sae(valley=None, find_l0=None)
    dist_worker.train_sae(unit_mean, dist_worker.make_stream(), dist_worker.make_cfg(str(tmp_path / "unit_mean")))
    assert not torch.allclose(unit_mean.input_scale, reference["input_scale"])  # the option took effect


def test_target_search_on_two_ranks_trains_the_one_process_sae(tmp_path, two_rank_states, monkeypatch):
    """The search reads only the decoder, the same on every rank: each rank raises and returns the
    same neurons as one process, with nothing reduced."""
    dist_worker.use_search_constants(monkeypatch.setattr)
    reference, state = _one_process_and_two_ranks(tmp_path, two_rank_states, "search", search=True)
    _assert_same_sae(state, reference)
    scale = reference["bias_adaptation.target_search.scale"]
    assert (scale > 1).any() and (scale == 1).any()  # some neurons searched, some did not (or came back)


@pytest.mark.slow
def test_hung_rank_ends_the_run_at_the_collective_timeout(tmp_path):
    code, err, seconds = _torchrun([str(WORKER), str(tmp_path), "--fail-rank", "1", "--fail-at", "5",
                                    "--fail-mode", "hang"], timeout_s=8)
    assert code != 0
    assert "gba-lens: rank 0 of 2 stopped: a collective failed" in err, err[-3000:]
    assert seconds < 240


@pytest.mark.slow
def test_ranks_whose_biases_drift_apart_stop_at_the_next_logging_step(tmp_path):
    code, err, _ = _torchrun([str(WORKER), str(tmp_path), "--fail-rank", "1", "--fail-at", "12",
                              "--fail-mode", "diverge"])
    assert code != 0
    # log_every 5: parameters are compared on steps 4, 9, 14, ...
    assert "failed at step 14: RankDivergenceError: b_enc differs between ranks" in err, err[-3000:]


@pytest.mark.slow
def test_train_activations_on_two_ranks_trains_the_one_process_sae(tmp_path, activations_file):
    from sae_lens import SAE

    from gba_lens import cli

    path, _ = activations_file
    args = ["train-activations", "--activations", str(path), "--d_sae", "48", "--n_groups", "4",
            "--batch_size", "256", "--epochs", "1", "--checkpoint_every", "4"]
    assert cli.main([*args, "--out", str(tmp_path / "one")]) == 0
    code, err, _ = _torchrun(["-m", "gba_lens", *args, "--out", str(tmp_path / "two")])
    assert code == 0, err[-3000:]
    one = SAE.load_from_disk(tmp_path / "one" / "sae").state_dict()
    two = SAE.load_from_disk(tmp_path / "two" / "sae").state_dict()
    assert one.keys() == two.keys()
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-5), key


@pytest.mark.slow
def test_lm_train_on_two_ranks_checkpoints_and_reports(tmp_path):
    """``gba-lens train`` (offline stdlib LM), one hook: each rank streams its shard; checkpoints and the
    report are written. A two-rank CLI run resumed: the several-hooks test below; a one-hook run resumed:
    tests/training/lm/test_lm_training.py, and two ranks' resumes from dist_worker.py above."""
    args = ["-m", "gba_lens", "train", "--batch_tokens", "1024", "--width", "128", "--eval_tokens", "1024",
            "--checkpoint_every", "4", "--training_tokens", "8192", "--out", str(tmp_path)]
    code, err, _ = _torchrun(args)
    assert code == 0, err[-3000:]
    assert latest_checkpoint(tmp_path / "checkpoints").name == "step_000000008"
    (metrics,) = [sae["metrics"] for sae in json.loads((tmp_path / "results.json").read_text())["saes"].values()]
    assert 0 < metrics["l0"] <= 128


def test_multi_sae_trainer_on_two_ranks_trains_the_one_process_saes(two_rank_states):
    """SAELens's multi-SAE coordinator with a DistributedGBATrainer per SAE: the same two SAEs as
    one process stepping both on the whole batch."""
    reference = dist_worker.train_multi(None)
    state = two_rank_states["multi"]
    assert state.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.allclose(state[key], value, atol=_atol(key, refitted=True)), key
    for hook in dist_worker.HOOKS:
        assert reference[f"{hook}.b_enc"].min() < 0  # the biases moved: the comparison is not trivial
    assert not torch.equal(reference["hook_a.W_enc"], reference["hook_b.W_enc"])


@pytest.mark.slow
def test_lm_train_several_hooks_data_parallel_from_one_pass_and_resumes(tmp_path):
    """``gba-lens train`` with two hooks from one model pass, data parallel: both SAEs trained,
    checkpointed together and continued together by a resumed run."""
    from sae_lens import SAE

    hooks = ["blocks.1.hook_resid_pre", "blocks.0.hook_resid_post"]
    common = ["-m", "gba_lens", "train", "--batch_tokens", "1024", "--width", "64", "--eval_tokens", "1024",
              "--checkpoint_every", "4"]
    code, err, _ = _torchrun([*common, "--hook", *hooks, "--training_tokens", "8192", "--out", str(tmp_path / "two")])
    assert code == 0, err[-3000:]
    step8 = latest_checkpoint(tmp_path / "two" / "checkpoints")
    assert step8.name == "step_000000008" and {p.name for p in step8.iterdir()} >= set(hooks)
    results = json.loads((tmp_path / "two" / "results.json").read_text())
    assert set(results["saes"]) == set(hooks)
    assert all(0 < results["saes"][h]["metrics"]["l0"] <= 64 for h in hooks)

    saved = SAE.load_from_disk(tmp_path / "two" / hooks[0]).state_dict()
    assert all(torch.isfinite(v).all() for v in saved.values())
    code, err, _ = _torchrun([*common, "--hook", *hooks, "--training_tokens", "12288", "--resume-anyway",
                              "--out", str(tmp_path / "two")])
    assert code == 0, err[-3000:]
    assert json.loads((tmp_path / "two" / "results.json").read_text())["resumed_from"][hooks[0]].endswith(
        f"step_000000008/{hooks[0]}")
    assert latest_checkpoint(tmp_path / "two" / "checkpoints").name == "step_000000012"


@pytest.mark.slow
def test_lm_train_from_an_activation_cache_on_two_ranks(tmp_path):
    """``--cache-dir`` under torchrun: each rank reads its shard of a cache built beforehand by one
    process; an empty cache directory is refused before anything runs."""
    from gba_lens import cli

    hook = "blocks.1.hook_resid_pre"
    cache = tmp_path / "cache"
    common = ["train", "--hook", hook, "--batch_tokens", "1024", "--width", "64", "--eval_tokens", "1024",
              "--training_tokens", "8192", "--cache_dir", str(cache)]
    code, err, _ = _torchrun(["-m", "gba_lens", *common, "--out", str(tmp_path / "refused")])
    assert code != 0 and "--cache-dir must already hold a cache" in err, err[-3000:]
    assert cli.main(["cache", "--hook", hook, "--tokens", "8192", "--out", str(cache)]) == 0
    code, err, _ = _torchrun(["-m", "gba_lens", *common, "--out", str(tmp_path / "two")])
    assert code == 0, err[-3000:]
    results = json.loads((tmp_path / "two" / "results.json").read_text())
    assert results["from_cache"] == str(cache)
    assert results["dataset_rows_used"] == json.loads((cache / "gba_lens_cache.json").read_text())["dataset_rows_used"]
    assert 0 < results["saes"][hook]["metrics"]["l0"] <= 64


@pytest.mark.slow
def test_distribute_hooks_trains_each_hook_on_its_own_rank_as_one_process_would(tmp_path):
    from safetensors.torch import load_file as load

    from gba_lens.training.lm import LMTrainConfig, train_gba_on_model

    common = dict(training_tokens=8192, batch_tokens=1024, width=[128], eval_tokens=1024)
    hooks = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"]
    code, err, _ = _torchrun(["-m", "gba_lens", "train", "--hook", *hooks, "--distribute-hooks",
                              *[x for k, v in common.items() for x in (f"--{k}", str(v[0] if isinstance(v, list) else v))],
                              "--checkpoint_every", "4", "--out", str(tmp_path / "two")])
    assert code == 0, err[-3000:]
    assert sorted(json.loads((tmp_path / "two" / "results.json").read_text())["saes"]) == hooks
    assert (tmp_path / "two" / "checkpoints" / "rank1_of_2" / "step_000000008").is_dir()
    # rank 1 trained hook 1 exactly as a one-process, one-hook run does
    train_gba_on_model(LMTrainConfig(hook=[hooks[1]], out=str(tmp_path / "one"), **common))
    one = load(str(tmp_path / "one" / hooks[1] / "sae_weights.safetensors"))
    two = load(str(tmp_path / "two" / hooks[1] / "sae_weights.safetensors"))
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-6), key
