"""GBA's user-facing options: defaults, validation and ``--help`` text in one place.

:class:`GBAOptions` is part of :class:`~gba_lens.saes.gba.GBATrainingSAEConfig` and of the
command-line configs (``gba-lens train``, ``gba-lens train-activations``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from gba_lens.saes.bias_adaptation import TARGET_MODES
from gba_lens.saes.input_scaling import INPUT_NORMS
from gba_lens.saes.refit_error import REFIT_ERRORS
from gba_lens.saes.sparse_step import SPARSE_STEP_MODES

ENCODER_INITS = ("random", "data")
"""Where the neurons start (``encoder_init``; :mod:`gba_lens.saes.data_init` for ``data``)."""
DEFAULT_FIRING_WORTH = 0.5
"""``firing_worth`` when unset, with data starts and the defaults' training (:meth:`GBAOptions.trains_as_defaults`)."""
DEFAULT_ENCODER_LR_SCALE = 2.0
"""``encoder_lr_scale`` when unset, with the defaults' training."""
# GBA options that change how a step is computed, not what is trained (not in a run's settings).
EXECUTION_OPTIONS = ("sparse_step",)
# Options added after runs were first recorded, with the value that trains as those runs did: a
# recorded run without one resumes when the new value is that one.
OPTIONS_ADDED_LATER: dict[str, Any] = {"valley_thresholds": False, "target_l0": None, "target_search": False,
                                       "encoder_regression": 0.0, "find_l0": False, "encoder_init": "random",
                                       "firing_worth": 0.0, "idle_groups": False, "anneal_with_lr": False,
                                       "encoder_lr_scale": 1.0, "activation_bias": False,
                                       "input_norm": "unit_mean", "decoder_refit": False, "refit_error": "absolute"}


def unset_choice(values: tuple[str, ...]) -> dict[str, Any]:
    """Field metadata for an option that is one of ``values`` or unset (None): its command-line flag lists the
    values and refuses others by name (simple_parsing reads ``custom_args``; it would show ``[Literal]``)."""
    return {"custom_args": {"choices": values, "type": str}}


NORM_CHOICE, ERROR_CHOICE = unset_choice(INPUT_NORMS), unset_choice(REFIT_ERRORS)


@dataclass(kw_only=True)
class GBAOptions:
    """The GBA hyperparameters a user chooses: part of :class:`GBATrainingSAEConfig`, and of the
    command-line configs (``gba-lens train``, ``gba-lens train-activations``), so that their
    defaults and ``--help`` text exist once. Keyword-only, so that it can sit beside SAELens's
    positional ``d_in`` / ``d_sae``."""

    n_groups: int = 10
    """K, the number of neuron groups (K = 1 is single-group BA)."""
    highest_target: float = 0.1
    """HTF, the target firing frequency of the first group (arXiv v1: 0.1; ICLR: 0.5). Under the
    paper's rule (``find_l0=False``) it sets the L0 the most: the rule holds the L0 near or under
    d_sae times the mean target (about 0.025 d_sae at 0.1 ... 1e-3); by default (``find_l0``) the
    range gives the targets' shape and starting level, and the data their level. Measured under the
    paper's rule (docs/experiments/prior_free.md, sixteenth and seventeenth steps): 0.2 meets every
    target on a hierarchical synthetic model and brings the stdlib LM closer to TopK; 0.025 meets
    them on three Zipfian models (with valley targets and target_search); the paper's toy keeps its
    features best at 0.1."""
    lowest_target: float = 1e-3
    """LTF, the target firing frequency of the last group (targets are geometric in between)."""
    update_interval: int = 1
    """T, optimiser steps between bias updates. The paper uses 50 over ~200k steps; for runs of
    thousands of steps T = 1 (statistics over each batch) is what recovers features, because
    the biases then get enough updates to settle; set 50 for the paper's schedule."""
    targets: Literal["geometric", "adaptive", "valleys"] = "geometric"
    """``geometric``: fixed targets from HTF down to LTF (the paper's rule). ``adaptive``: the
    targets start there and each group's target then follows its neurons (raised while more of
    them are held at target than sit under it, lowered otherwise). ``valleys`` (with
    ``valley_thresholds``): a group's target becomes the median frequency of the features its
    neurons found, once a tenth of them have (see :mod:`gba_lens.saes.target_adaptation`).
    Ignored for K = 1."""
    target_l0: float | None = None
    """Ask for an L0 (mean active latents per input) instead of a frequency range: the geometric
    targets are scaled together until the SAE fires this many latents, live neurons under their
    target are raised as dead ones are, and neurons far over it are lowered by steps that grow
    with how far over (:mod:`gba_lens.saes.l0_control`); training warns
    if it ends more than a tenth off (too few steps). The other options train as with ``find_l0`` (those
    that say "with ``find_l0`` or ``target_l0``"), but for ``valley_thresholds``: only the level is told. None: the
    targets are HTF ... LTF as given. Only with ``targets="geometric"``."""
    find_l0: bool | None = None
    """Find the L0 from the data. Unset (the default): on unless ``target_l0``, ``target_search``,
    other ``targets`` or K = 1 set the level, or ``gating="relu"`` (not measured with it); False:
    the paper's rule, the targets fixed at HTF ... LTF. The geometric targets are scaled together
    (as for ``target_l0``; HTF ... LTF then give their shape and starting level, not their level)
    until the latents that fire together are no more aligned than any two (their decoders' mean
    |cosine| over the mean of two live latents, the ratio 1 that data made of features with their
    own directions have), measured every 10 steps (:mod:`gba_lens.saes.coactivation`; logged as
    ``gba/coactivation_ratio``). Too few firings leave mixtures that fire together (ratio > 1: the
    targets rise), too many fill the input's other directions (< 1: they fall). Where the inputs have
    few dimensions, latents that the data's features push over their thresholds fire together too;
    the ratio is also read off the SAE's own code (its activations moved to other rows, decoded and
    encoded again), which they do not lift, and that reading steers where the first exceeds it by
    more than 0.07 (``coactivation.GATE``; read after a check over 1 only, as only those raise the
    targets: ``coactivation.OWN_CODE_AFTER``). Measured with ``valley_thresholds``
    (docs/experiments/prior_free.md, 3 seeds or more): the L0 of
    a hierarchical synthetic model, the paper's toy, three Zipfian ones and a small model with more
    latents than features within 25 percent of the truth at their budgets (the paper's rule: -48 ... +180
    percent), with every MCC and F1 target of issue 18 on them but the toy's. Features that are all
    frequent and independent give it no level to stop at (it lowers the targets to a tenth of the
    true L0); the training reports a run whose inputs that fire no latent leave over a fifth of the
    data's variance unexplained (there 40-49 percent, elsewhere at most 9), and warns when the
    targets were still moving at the end. Only with ``targets="geometric"``,
    not with ``target_l0`` or ``target_search``."""
    valley_thresholds: bool | None = None
    """Move each neuron's threshold to the valley of its own pre-activation histogram, once that
    histogram shows a second mode (the inputs where the neuron's feature is present), so that
    it fires at its feature's frequency rather than at its group's target
    (:mod:`gba_lens.saes.valley_thresholds`). The targets still drive the search for features.
    Unset (the default): on with ``find_l0`` or ``targets="valleys"``, off otherwise (with ``target_l0`` it holds
    each neuron at its feature's frequency whatever the level asked: a Zipfian model asked for 3 ends at 1.7)."""
    target_search: bool = False
    """Raise the target of a neuron whose decoder direction keeps turning (at four checks 100 steps
    apart in a row: it has found no feature at its target), doubling it at each further check up to
    HTF, and in the last quarter of the run send the ones still turning back to their group's
    target (:mod:`gba_lens.saes.target_search`).
    Needs the run's length, which gba_lens's trainers give the SAE. Not with ``target_l0``."""
    encoder_regression: float = 0.0
    """Weight of a loss that trains each neuron's pre-activation u_m on every input, also where it is
    silent (the gate gives those inputs no gradient), toward its leave-one-out coefficient
    c_m = z_m + d_m . (x - x_hat) / |d_m|^2: what it should output once the other latents'
    reconstruction is removed (no gradient through c_m). The loss is the weight times d_in / d_sae
    times sum_m (u_m - c_m)^2, averaged over the batch. 0 (default): the paper's training. Costs one
    more batch x d_in x d_sae product per step; the step stays dense (``sparse_step`` off)."""
    encoder_init: Literal["random", "data"] | None = None
    """``random``: the neurons start at random directions (SAELens's initialisation). ``data``: at
    inputs of the first training batch, centred and scaled as the encoder sees them, drawn to spread
    apart (k-means++ on |cosine|; :mod:`gba_lens.saes.data_init`); needs scaled inputs (``input_norm``
    not ``none``). The draw follows the run's seed. Unset (the default): ``data`` with ``find_l0`` or
    ``target_l0`` (and scaled inputs), ``random`` otherwise (the paper's rule starts as the paper does).
    Measured (docs/experiments/prior_free.md, thirtieth to thirty-third steps): at the stdlib LM's
    preset budget it leaves under half of GBA's distance to TopK's frontier on both hooks, and the
    paper's toy reaches 99.5 / 99.5 of its features; on a small synthetic model with more latents
    than features its L0 ends higher unless ``firing_worth`` lowers it (the default does)."""
    firing_worth: float | None = None
    """Scale down the target of a neuron whose firings reconstruct little: every 10 steps each
    neuron's firings are valued by how much the squared error would grow without them (|z d|^2 +
    2 z d . r), and a neuron whose firings are worth less than this share of the average firing's
    has its target scaled by the ratio (at least 0.05), so latents with no feature to reconstruct
    fall nearly silent (:mod:`gba_lens.saes.firing_worth`). It measures from 0.7 of the run on,
    once the latents on their way to a feature have arrived (the run's length comes from gba_lens's
    trainers). 0: off, every neuron keeps its target. Unset (the default): 0.5 with data starts and
    ``find_l0`` or ``target_l0``, 0 otherwise (it only pays with data starts). Measured (docs/experiments/prior_free.md,
    thirty-first to thirty-third steps): with data starts it brings the small over-complete model's
    L0 from +37 to +15 percent of its truth, keeps the paper's toy at 99.5 / 99.2 and takes the stdlib
    LM's mlp_out closest to TopK's frontier; acting from the start instead it cost the toy 2.4 points."""
    idle_groups: bool | None = None
    """Move the lowest groups' neurons up once their firings, after doing harm, are worth nothing: every
    10 steps each group's firings are valued as ``firing_worth`` values them, summed over the last 100
    steps, per firing against the average firing's. Once the lowest group's firings have done harm (at
    most -0.15 of it) and then no longer do (worth more than nothing), the lowest groups worth at most
    0.15 of it form an idle block; if the lowest is worth at most 0.05, the neurons of the block's lower
    half join as many groups right above it and take their targets (:mod:`gba_lens.saes.idle_groups`). Where
    every feature is more frequent than the lowest targets let a neuron resonate with, those groups find
    nothing; moved up, their neurons find the features the others missed. Nothing moves after 0.4 of
    the run (the run's length comes from gba_lens's trainers). Unset (the default): on with ``find_l0`` or
    ``target_l0``, off otherwise; it needs geometric targets, no ``target_search`` and K >= 2. Measured
    (docs/experiments/prior_free.md, thirty-fifth and thirty-sixth steps): on the paper's toy every
    feature found at the preset budget on eight seeds of eight (without it one to three short on five
    seeds of six) at +17 to +25 percent of the true L0; runs of 0.6 times the budget or less end as
    without it, and at twice it every feature is found at +31 to +34 percent; on the Zipfian,
    hierarchical, small and counter-example models and the stdlib LM nothing moves."""
    anneal_with_lr: bool | None = None
    """Scale the bias rule's steps (gamma_minus, gamma_plus and the valley step) by the learning rate
    over its peak once its warm-up is over, so that the thresholds settle as the weights do while the
    learning rate decays (gba_lens's trainers give the SAE the rate; with a constant learning rate
    nothing changes). Unset (the default): on with ``find_l0`` or ``target_l0``, off otherwise (the paper's rule moves
    its biases at full step to the end). Measured (docs/experiments/prior_free.md, thirty-seventh
    step): at the stdlib LM's preset budget (its learning rate decaying over the last 30 percent) the
    explained-variance gap to TopK's frontier falls by two fifths on resid_pre and two thirds on mlp_out
    (CE loss recovered: a quarter and three quarters); the Zipfian, hierarchical and small models keep
    every figure (the small model's L0 +4 percent of its truth, from +15); the paper's toy and the
    counter-example train at a constant learning rate and are unchanged. With ``target_l0`` a neuron firing far over
    its target lowers by a step grown with how far over, whatever this does (``l0_control.FAR_OVER``)."""
    encoder_lr_scale: float | None = None
    """The encoder's learning rate over the other weights' once 0.4 of the run is over (gba_lens's trainers give the
    encoder weights their own Adam parameter group; the schedule applies to both). The encoder directions are kept
    at unit norm, where Adam's steps, about the learning rate's size whatever the weights' norm, turn them slowly;
    until 0.4 of the run the neurons decide which features they go for (``idle_groups`` moves nothing after it) at
    the common rate, and from there the encoder sharpens its directions this much faster. 1: one learning rate
    throughout. Unset (the default): 2 with ``find_l0`` or ``target_l0``, 1 otherwise (the paper's rule). Measured
    (docs/experiments/prior_free.md, thirty-eighth step): at the stdlib LM's preset budget the explained-variance
    gap to TopK's frontier falls by a third on resid_pre and mlp_out comes above it on average over six seeds; every
    target the synthetic models met holds (Zipf's MCC a little lower, the small model's and synthbench's a little
    higher); the same rate from the start costs the paper's toy a feature on some seeds. At a constant learning rate
    more latents end silent (``gba-lens train``'s default run on the stdlib LM: 17 against 6 percent, at the same CE
    loss recovered and explained variance)."""
    activation_bias: bool | None = None
    """Give each latent a learned offset c_m added to what it outputs when it fires: z_m = (u_m + max(c_m, b_m)) *
    1[u_m + b_m > 0] (JumpReLU gate only; exported as SAELens's ``jumprelu`` with b_enc = max(c, b) and threshold =
    max(c, b) - b). The bias rule still places every threshold; c starts at 0 and is trained by gradient. It
    corrects what the threshold selects: where u_m clears the threshold the interference in it leans positive, so
    the output that reconstructs best is below u_m. The learned offsets end negative, between 0 and the ReLU gate's
    b_m. Unset (the default): on at a residual-stream hook with ``find_l0`` or ``target_l0`` and the JumpReLU gate,
    off anywhere else, where no hook is named and under the paper's rule (:mod:`gba_lens.saes.hook_defaults`).
    Measured (docs/experiments/prior_free.md, thirty-ninth, fortieth and fifty-sixth steps): with ``per_token`` it
    takes resid_pre's CE loss recovered and explained variance above TopK's and BatchTopK's frontiers; learned from
    the start it costs the paper's toy features (learned later it raises the toy's L0 by a third instead)."""
    input_norm: Literal["unit_mean", "per_token", "none"] | None = field(default=None, metadata=NORM_CHOICE)
    """``unit_mean``: inputs centred and scaled to unit mean norm (scale and centre set on the first batch).
    ``per_token``: each input divided by its own norm first, so that which latents fire does not depend on an
    input's scale, and the reconstruction scaled back (exported as SAELens's ``constant_norm_rescale``;
    :mod:`gba_lens.saes.input_scaling`). ``none``: the inputs as they are. Unset (the default): ``per_token`` at a
    residual-stream hook, which the next LayerNorm reads token by token, with ``find_l0`` or ``target_l0``;
    ``unit_mean`` anywhere else, where no hook is named and under the paper's rule
    (:mod:`gba_lens.saes.hook_defaults`). Measured (docs/experiments/prior_free.md, fortieth and fifty-sixth steps):
    on the stdlib LM's resid_pre, with ``activation_bias``, 0.0008 CE loss recovered above TopK's frontier on every
    one of twelve seeds; on the synthetic models, whose features' magnitudes do not follow each other, the paper's
    toy and the Zipf models lose most features with it."""
    decoder_refit: bool | None = None
    """After the run's last step, replace the decoder by the least-squares one on the codes of the run's last rows
    (up to 262,144, kept by gba_lens's trainers), pulled towards the trained decoder where a latent fires rarely;
    with the JumpReLU gate, fit with it each latent's firing offset, what a firing latent adds to its output,
    exported in SAELens's JumpReLU ``b_enc`` and ``threshold``, then move the thresholds twice to where a firing's
    worth to the reconstruction meets one price for every latent, the L0 held, each time fitting again
    (:mod:`gba_lens.saes.decoder_refit`, :mod:`gba_lens.saes.threshold_reallocation`). GBA's thresholds move until
    the end of its run, and the decoder, trained at a decaying learning rate, ends behind the codes it decodes.
    Where the run's last rows (262,144 at most, 174,762 of GPT-2's 768 inputs: 512 MiB) give its latents few
    firings, a refit is taken only if it reconstructs rows it did not read better than the trained SAE; else the run
    keeps its decoder and says so. Over 8,192 latents the fit is solved on the rows' sparse codes by conjugate
    gradients (:mod:`gba_lens.saes.sparse_refit`), the offsets in Gauss-Newton steps with the decoder. Unset (the
    default): on with ``find_l0`` or ``target_l0``, off otherwise (the paper's rule). Measured
    (docs/experiments/prior_free.md, forty-second to forty-fourth, forty-eighth and fifty-first steps; the stdlib
    LM's preset budget): explained variance rises by about 0.006 on resid_pre and 0.003 on mlp_out, CE loss
    recovered by 0.0005 and 0.004, which puts both hooks' EV above TopK's frontier; the synthetic models keep every
    target they met. On one CPU core it takes about 40 s at 512 latents on 262,144 rows (half that on 131,072), and
    grows with the cube of d_sae (``benchmarks/bench_training.py``) up to 8,192; wider, with the rows' active
    entries times d_in times the iterations."""
    refit_error: Literal["absolute", "relative"] | None = field(default=None, metadata=ERROR_CHOICE)
    """What ``decoder_refit`` lowers: ``absolute``, the rows' squared error; ``relative``, each row's squared
    error over its squared norm, as a LayerNorm reading the activation sees it (:mod:`gba_lens.saes.refit_error`).
    Unset (the default): relative on a residual-stream hook (the SAE's ``cfg.metadata.hook_name``, which
    SAELens's runners set: ``hook_resid_pre``, ``_mid``, ``_post``), absolute anywhere else and where no hook
    is named (stored or synthetic activations). Measured (docs/experiments/prior_free.md, forty-sixth step;
    six seeds at the stdlib LM's preset budget): relative raises resid_pre's CE loss recovered by 0.0002,
    onto TopK's frontier on average, and lowers its explained variance by 0.0003; on mlp_out, whose errors
    add to a residual stream its rows do not show, it lowers explained variance and moves CE both ways."""
    gating: Literal["jumprelu", "relu"] = "jumprelu"
    """``jumprelu``: z = u * 1[u + b > 0] (exported as SAELens ``jumprelu``); ``relu``:
    z = relu(u + b) (exported as SAELens ``standard``)."""
    sparse_step: Literal["auto", "on", "off"] = "auto"
    """Compute the training step on the active latents only (:mod:`gba_lens.saes.sparse_step`):
    ``auto`` uses it on CPU for SAEs of at least 1024 latents once at most a fraction 0.05 of the
    (sample, latent) entries fire (on GPU, not measured yet, it keeps the dense step); ``on`` /
    ``off`` force it. Both give the same SAE up to float rounding."""

    def gba_options(self) -> dict[str, Any]:
        """These options as keyword arguments of :class:`GBATrainingSAEConfig`, the unset ones
        resolved (:meth:`resolved_level_options`): what a run trains with and records."""
        options = {f.name: getattr(self, f.name) for f in fields(GBAOptions)}
        options["find_l0"], options["valley_thresholds"] = self.resolved_level_options()
        options["encoder_init"], options["firing_worth"] = self.resolved_start_options()
        options["idle_groups"] = self.resolved_idle_groups()
        options["anneal_with_lr"] = self.resolved_anneal()
        options["encoder_lr_scale"] = self.resolved_encoder_lr_scale()
        options["decoder_refit"] = self.resolved_decoder_refit()
        return options

    def resolved_level_options(self) -> tuple[bool, bool]:
        """``(find_l0, valley_thresholds)`` with unset (None) values resolved: ``find_l0`` is on
        unless another option sets the level (``target_l0``, ``target_search``, ``targets`` other
        than geometric, or K = 1) or the gate is ReLU (not measured with it); ``valley_thresholds``
        is on with ``find_l0`` (the pair measured together) or ``targets="valleys"`` (which reads
        them)."""
        level_set = (self.target_l0 is not None or self.target_search or self.targets != "geometric"
                     or self.n_groups == 1 or self.gating != "jumprelu")
        find_l0 = not level_set if self.find_l0 is None else self.find_l0
        valleys = (find_l0 or self.targets == "valleys") if self.valley_thresholds is None else self.valley_thresholds
        return find_l0, valleys

    def trains_as_defaults(self) -> bool:
        """Whether the options that resolve with the defaults' training resolve on: with ``find_l0``, or with
        ``target_l0`` under the JumpReLU gate (the defaults told their L0 instead of finding it; ``valley_thresholds``
        stays off, see there). Measured (docs/experiments/prior_free.md, fifty-ninth step; 3 seeds): told the top-W
        true L0, they raise MCC, F1 and EV over the paper's options told the same L0 on the paper toy, the three
        Zipfian models and synthbench, each L0 within 3 percent of the request; told 16, the stdlib LM's resid_pre
        SAEs of 1,024 latents come above TopK's and BatchTopK's frontiers on every seed."""
        return self.resolved_level_options()[0] or (self.target_l0 is not None and self.gating == "jumprelu")

    def resolved_start_options(self) -> tuple[str, float]:
        """``(encoder_init, firing_worth)`` with unset (None) values resolved: data starts with the
        defaults' training where the inputs are scaled (``input_norm``, which the first batch sets), and
        with them ``DEFAULT_FIRING_WORTH``; otherwise random starts (the paper's) and no scaling."""
        defaults = self.trains_as_defaults()
        encoder_init = self.encoder_init or ("data" if defaults and self.input_norm != "none" else "random")
        firing_worth = DEFAULT_FIRING_WORTH if defaults and encoder_init == "data" else 0.0
        return encoder_init, firing_worth if self.firing_worth is None else self.firing_worth

    def resolved_idle_groups(self) -> bool:
        """``idle_groups`` with an unset (None) value resolved: on with the defaults' training (which needs the
        geometric targets without ``target_search``, and K >= 2), off otherwise (the paper's rule)."""
        if self.idle_groups is not None:
            return self.idle_groups
        return self.trains_as_defaults() and self.n_groups >= 2

    def resolved_anneal(self) -> bool:
        """``anneal_with_lr`` with an unset (None) value resolved: on with the defaults' training, off otherwise."""
        return self.trains_as_defaults() if self.anneal_with_lr is None else self.anneal_with_lr

    def resolved_encoder_lr_scale(self) -> float:
        """``encoder_lr_scale`` with an unset (None) value resolved: ``DEFAULT_ENCODER_LR_SCALE`` with
        the defaults' training, 1 otherwise (the paper's rule trains every weight at one rate)."""
        if self.encoder_lr_scale is not None:
            return self.encoder_lr_scale
        return DEFAULT_ENCODER_LR_SCALE if self.trains_as_defaults() else 1.0

    def resolved_decoder_refit(self) -> bool:
        """``decoder_refit`` with an unset (None) value resolved: on with the defaults' training, off otherwise."""
        return self.trains_as_defaults() if self.decoder_refit is None else self.decoder_refit

    def resolve_unset_options(self) -> None:
        """Replace the unset (None) options by what they resolve to, in place."""
        self.find_l0, self.valley_thresholds = self.resolved_level_options()
        self.encoder_init, self.firing_worth = self.resolved_start_options()  # type: ignore[assignment]
        self.idle_groups = self.resolved_idle_groups()
        self.anneal_with_lr = self.resolved_anneal()
        self.encoder_lr_scale = self.resolved_encoder_lr_scale()
        self.decoder_refit = self.resolved_decoder_refit()

    def __post_init__(self) -> None:
        self.check_gba_options()

    def check_gba_options(self, d_sae: int | None = None) -> None:
        """Raise ``ValueError`` naming the first invalid option; ``d_sae``: also check that the
        SAE has at least one neuron per group. The one place these options are validated: the
        SAE config and the command-line configs call it."""
        if self.input_norm is not None and self.input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {', '.join(INPUT_NORMS)}, got {self.input_norm!r}")
        if self.gating not in ("jumprelu", "relu"):
            raise ValueError(f"gating must be 'jumprelu' or 'relu', got {self.gating!r}")
        if self.sparse_step not in SPARSE_STEP_MODES:
            raise ValueError(f"sparse_step must be one of {SPARSE_STEP_MODES}, got {self.sparse_step!r}")
        if self.targets not in TARGET_MODES:
            raise ValueError(f"targets must be one of {TARGET_MODES}, got {self.targets!r}")
        find_l0, valley_thresholds = self.resolved_level_options()
        if self.targets == "valleys" and not valley_thresholds:
            raise ValueError("targets='valleys' reads the valley thresholds' histograms: set valley_thresholds=True")
        if self.target_l0 is not None and not 0.0 < self.target_l0 <= (d_sae or float("inf")):
            raise ValueError(f"target_l0 must be > 0{f' and <= d_sae={d_sae}' if d_sae else ''}, got {self.target_l0}")
        if self.target_l0 is not None and self.targets != "geometric":
            raise ValueError(f"target_l0 and targets={self.targets!r} both move the targets; set one of them")
        if self.target_l0 is not None and self.target_search:
            raise ValueError("target_l0 and target_search both move the targets; set one of them")
        if find_l0 and (self.target_l0 is not None or self.target_search or self.targets != "geometric"):
            raise ValueError("find_l0 moves the targets: it needs targets='geometric' and neither target_l0 "
                             "nor target_search")
        if not (math.isfinite(self.encoder_regression) and self.encoder_regression >= 0.0):
            raise ValueError(f"encoder_regression must be a finite number >= 0, got {self.encoder_regression}")
        if self.encoder_regression > 0.0 and self.sparse_step == "on":
            raise ValueError("encoder_regression needs every latent's pre-activation; sparse_step='on' computes the "
                             "active ones only (use sparse_step='auto' or 'off')")
        if self.refit_error is not None and self.refit_error not in REFIT_ERRORS:
            raise ValueError(f"refit_error must be one of {REFIT_ERRORS}, got {self.refit_error!r}")
        if self.encoder_init is not None and self.encoder_init not in ENCODER_INITS:
            raise ValueError(f"encoder_init must be one of {ENCODER_INITS}, got {self.encoder_init!r}")
        if self.firing_worth is not None and not (math.isfinite(self.firing_worth) and 0.0 <= self.firing_worth <= 1.0):
            raise ValueError(f"firing_worth must be in [0, 1], got {self.firing_worth}")
        if self.encoder_lr_scale is not None and not (math.isfinite(self.encoder_lr_scale) and self.encoder_lr_scale > 0.0):
            raise ValueError(f"encoder_lr_scale must be a finite number > 0, got {self.encoder_lr_scale}")
        if self.activation_bias and self.gating != "jumprelu":
            raise ValueError("activation_bias offsets the JumpReLU gate's output; the ReLU gate's output "
                             "u + b already carries the bias (use gating='jumprelu')")
        if self.update_interval < 1:
            raise ValueError(f"update_interval must be >= 1, got {self.update_interval}")
        if self.n_groups < 1:
            raise ValueError(f"n_groups must be >= 1, got {self.n_groups}")
        if self.resolved_idle_groups() and (self.n_groups < 2 or self.targets != "geometric" or self.target_search):
            raise ValueError("idle_groups moves neurons between the geometric groups: it needs n_groups >= 2, "
                             "targets='geometric' and no target_search")
        if not 0.0 < self.lowest_target <= self.highest_target <= 1.0:  # NaN fails too
            raise ValueError(f"need 0 < lowest_target <= highest_target <= 1, got "
                             f"lowest_target={self.lowest_target}, highest_target={self.highest_target}")
        if d_sae is not None and self.n_groups > d_sae:
            raise ValueError(f"n_groups must be in [1, d_sae={d_sae}], got {self.n_groups}")
