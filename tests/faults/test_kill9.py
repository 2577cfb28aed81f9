"""kill -9 at random points (between steps and in the middle of a checkpoint write), then the same
command again: the run resumes from the newest complete checkpoint and ends bit-identical to an
uninterrupted run; no visible checkpoint is ever partial."""

import random

import pytest
import torch

from fault_tools import FIGURES, assert_identical, kill_on_call, run_in_child, unverifiable_bytes
from gba_lens import cli
from gba_lens.data.activations import save_activations
from gba_lens.saes import decoder_refit, refit_check

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

STEPS = 48  # 3072 rows, batch 128, 2 epochs


@pytest.fixture(scope="module", autouse=True)
def refit_on_most_of_the_run():
    """decoder_refit (a default) reads the run's last 4,096 rows: two thirds of either command's run, so
    that most kills resume inside them, and the resumed run reads the earlier ones again (train-activations:
    its data stream seeks back; train: from the batches it replays). The forked runs inherit the patch."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(decoder_refit, "ROWS", 4096)
        patch.setattr(refit_check, "TRUSTED_FIRINGS", 0.0)  # every refit unchecked
        yield


@pytest.fixture(scope="module")
def acts_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("acts") / "acts.safetensors"
    g = torch.Generator().manual_seed(0)
    save_activations(path, torch.relu(torch.randn(3072, 12, generator=g)) * 3)
    return path


def _train_activations(acts_file, out):
    return ["train-activations", "--activations", str(acts_file), "--d-sae", "32", "--n-groups", "4",
            "--batch-size", "128", "--epochs", "2", "--checkpoint-every", "4", "--out", str(out)]


@pytest.fixture(scope="module")
def reference(acts_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    assert run_in_child(lambda: cli.main(_train_activations(acts_file, out))) == ("exit", 0)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_train_activations_survives_kill9(acts_file, reference, tmp_path, seed):
    from gba_lens.training.trainer import GBATrainer

    rng = random.Random(seed)
    out = tmp_path / "run"
    # kill once or twice per run, each time between steps or during a checkpoint write
    for _ in range(1 + seed % 2):
        if rng.random() < 0.5:
            where, n = "step", rng.randrange(2, STEPS)
        else:
            where, n = "save_trainer_state", rng.randrange(1, STEPS // 4)

        def killed_run(where=where, n=n):
            kill_on_call(GBATrainer, where, n)
            return cli.main(_train_activations(acts_file, out))

        status = run_in_child(killed_run)
        if status == ("exit", 0):  # the kill point lay past what remained of the run
            continue
        assert status == ("killed", 9), status
        FIGURES["bytes lost"] += unverifiable_bytes(out / "checkpoints")
        FIGURES["kills survived"] += 1
    assert run_in_child(lambda: cli.main(_train_activations(acts_file, out))) == ("exit", 0)
    assert_identical(reference / "sae", out / "sae")
    assert not list((out / "checkpoints").glob(".tmp-*"))  # stale temporaries removed by later saves


TINY_LM = ["--training-tokens", "6144", "--batch-tokens", "512", "--width", "32", "--context-size", "32",
           "--eval-tokens", "256", "--eval-batch-prompts", "4", "--store-batch-prompts", "8",
           "--buffer-batches", "2", "--device", "cpu", "--checkpoint-every", "3"]
HOOKS = ["--hook", "blocks.0.hook_resid_post", "--hook", "blocks.1.hook_resid_post"]  # repeated: both


@pytest.fixture(scope="module")
def lm_reference(tmp_path_factory):
    ref = tmp_path_factory.mktemp("lm_reference")
    assert run_in_child(lambda: cli.main(["train", *HOOKS, *TINY_LM, "--out", str(ref)])) == ("exit", 0)
    return ref


@pytest.mark.parametrize("where", ["step", "save", "step+corrupt"])
def test_lm_multi_hook_survives_kill9(lm_reference, tmp_path, where):
    from gba_lens.training.trainer import GBATrainer

    ref, out = lm_reference, tmp_path / "run"

    def killed_run():
        if where.startswith("step"):  # two SAEs step per batch: call 15 is batch 8, after the step-6 checkpoint
            kill_on_call(GBATrainer, "step", 15)
        else:  # the second checkpoint, after the first hook is written: half a multi-hook save
            kill_on_call(GBATrainer, "write_checkpoint_files", 3, after=True)
        return cli.main(["train", *HOOKS, *TINY_LM, "--out", str(out)])

    assert run_in_child(killed_run) == ("killed", 9)
    FIGURES["bytes lost"] += unverifiable_bytes(out / "checkpoints")
    FIGURES["kills survived"] += 1
    if where == "step+corrupt":  # and a bit flip in one hook of the newest checkpoint: step 3 is used
        weights = out / "checkpoints" / "step_000000006" / "blocks.1.hook_resid_post" / "sae_weights.safetensors"
        data = bytearray(weights.read_bytes())
        data[-7] ^= 0x01
        weights.write_bytes(bytes(data))
        FIGURES["corruptions detected"] += 1
    assert run_in_child(lambda: cli.main(["train", *HOOKS, *TINY_LM, "--out", str(out)])) == ("exit", 0)
    if where == "step+corrupt":
        assert (out / "checkpoints" / "corrupt-step_000000006").is_dir()
    for hook in ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post"):
        assert_identical(ref / hook, out / hook)
