"""To prune, or not to prune: exploring the efficacy of pruning for model compression (Zhu & Gupta,
ICLR 2018 Workshop; arXiv:1710.01878).

Method (Sec. 3, Eq. 1): automated gradual pruning. Every pruned layer carries a binary mask of the
same shape as its weights; the weights of smallest magnitude are masked to zero until the layer
reaches the sparsity the schedule asks for at that step. The sparsity rises from an initial value
``s_i`` (usually 0) to a final value ``s_f`` over ``n`` pruning steps, starting at training step
``t0`` with pruning frequency ``Δt``:

    s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n Δt))^3,    t in {t0, t0 + Δt, ..., t0 + n Δt}.

The masks are updated every ``Δt`` steps while the network keeps training, so that training recovers
from the accuracy each pruning step costs; the cube prunes fast while redundant connections are
abundant and ever less as fewer weights remain. Once the model reaches ``s_f`` the masks are no
longer updated (the paper finds ``Δt`` between 100 and 1000 steps has negligible impact). Pruning is
per layer: every pruned layer is brought to the same sparsity ``s_t`` by its own magnitude threshold
(the released ``tf.contrib.model_pruning`` computes one threshold per masked weight tensor). The
magnitude masks are Han et al. 2015's (``reproductions/han2015.py``: ``prune_by_magnitude`` with the
previous masks, so a pruned weight stays pruned, and ``apply_masks`` after every step).

The paper's question: at a bounded memory footprint (the same number of non-zero parameters), is a
large model pruned (*large-sparse*) more accurate than a smaller dense model (*small-dense*), the
alternative of the abstract that would "simply reduce the number of hidden units while maintaining the
model's dense connection structure"?

Claims (Abstract, arXiv:1710.01878v2): "we find large-sparse models to consistently outperform
small-dense models and achieve up to 10x reduction in number of non-zero parameters with minimal loss
in accuracy", across deep CNNs (InceptionV3, MobileNets on ImageNet), stacked LSTMs (PTB) and seq2seq
LSTMs (GNMT, WMT16 En-De). The tables' values (InceptionV3 and MobileNet top-1 at 50/75/87.5/90%
sparsity, PTB perplexity, BLEU) could not be read where this file was written: the catalogue shows
them as unconfirmed and they are not checked. Sec. 3's text was read in the quotations of the
released code's README (``tensorflow/contrib/model_pruning``) and of Distiller's and NNI's
documentation of the method.

Measured here, on one training budget for every model: ``dense`` steps train the dense network (the
steps before ``t0``), then ``prune`` steps during which the gradual schedule runs from ``t0`` (the
stage's first step) to ``t0 + n Δt`` and the sparse network recovers for the rest of the stage. The
large network is pruned to each final sparsity of ``schedule.final_sparsities`` (50%, 75%, 90%:
``sparse_accuracy_s<S>``, ``nonzero_params_s<S>``).

- ``imagenet-ptb-wmt16-en-de-large-sparse-vs`` (large-sparse vs small-dense): at each sparsity of
  ``versus_small_dense`` (every final sparsity in these profiles), the harness model
  made narrower to the same number of parameters (the LeNet-300-100's two hidden layers scaled by one
  width multiplier, 300w-100w; LeNet-5's ``width``) and trained from scratch for the same ``dense +
  prune`` steps: ``small_dense_accuracy_s<S>``, ``small_dense_params_s<S>``,
  ``small_dense_width_s<S>``, and ``gain_vs_small_dense_s<S>_pp`` = large-sparse minus small-dense
  accuracy, per seed. Curves: the method's accuracy against its compression ratio and the
  small-dense models at the same ratios.
- ``ten-x-minimal-loss``: the network pruned to 90% (10x fewer non-zero weights):
  ``accuracy_change_pp`` against ``baseline_accuracy``, the dense network given the same ``prune``
  steps without masks; ``weight_compression`` (prunable weights over non-zero ones), and the standard
  ``param_compression`` (biases counted), ``flop_reduction`` and CSR ``storage_compression``. Curves:
  the method at every final sparsity and ``controls.pruning_curve`` (one-shot global magnitude pruning
  of the same dense network, fine-tuned with masks for the same ``prune`` steps) at the same ratios.

Harness differs: Fashion-MNIST and LeNet-300-100 for the quick profile, MNIST and LeNet-5 for the
paper profile (the paper prunes InceptionV3, MobileNets, LSTMs on PTB and GNMT, none of them in the
harness; LeNet-5's width multiplier gives its small-dense models); a few thousand SGD steps instead
of the paper's full schedules, and the schedule scaled to them (quick: 2,400 dense steps, then
``Δt`` = 25, ``n`` = 12 and 100 steps of recovery; the paper's ``t0``, ``n`` and ``Δt`` per model
were not read); SGD with momentum and a cosine learning rate per stage (the pruning stage restarts
it, so pruning happens while the rate is high and recovery while it decays). Every Linear/Conv
weight is pruned, biases never. A mask update reaches exactly ``s_t`` (top-k magnitudes per layer);
the released code instead estimates each layer's threshold from a 255-bin histogram and smooths it
over updates (``threshold_decay`` 0.9), so its sparsity lags ``s_t``; and its masked weights keep
their values (they get no gradient) where here they are zeroed, which the paper's "pruned" reads as.
A pruning stage shorter than ``t0 + n Δt`` (the contract test's few steps) reaches ``s_f`` at its
end.

Quick verdict: partly, and why (seeds 0-2; baseline 88.8%, 0.8 pp below its reference). Large-sparse
beats small-dense at 2x (+0.11 pp, 95% interval 0.00 to 0.22) and 4x (+0.21 pp, 0.10 to 0.32) and
ties it at 10x (0.00 pp, -0.69 to 0.68: inconclusive). At 10x the gradually pruned network loses
1.69 pp (-2.34 to -1.04) against the same-budget dense baseline, over the claim's 1 pp, and the
control (global one-shot magnitude pruning with the same 400 steps of fine-tuning) beats the method
at every ratio (-0.5 pp at 10x). On seeds 10-12 the loss at 10x decomposes: gradual
-1.32/-1.74/-1.49 pp; the same with the output layer left dense -1.11/-1.22/-0.99; a schedule ending
at step 200 with 200 steps of recovery -1.25/-1.58/-1.47; one-shot per-layer magnitude pruning with
the same 400 steps of retraining -0.64/-0.78/-0.53; the global control -0.24/-0.57/-0.26. With a
pruning stage of 1,600 steps (``Δt`` = 100, ``n`` = 12; seeds 10-11) the gradual loss falls to
-0.67/-0.85 pp (one-shot per-layer -0.50/-0.76, global -0.36/-0.54): within the claim's 1 pp. The
failure is the quick profile's short pruning stage: a gradual schedule spends most of it pruning,
and 100 steps of recovery at a decaying rate do not win back what the last mask updates cost; the
quick profile cannot give it more within its 60 s (the paper profile's stage is 10,000 steps). What
remains at the longer budget against the control is 0.1-0.2 pp from the gradual schedule and 0.1-0.2
pp from per-layer uniform sparsity (this network's 1,000-weight output layer kept at 10%).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from atlas_reproductions.han2015 import Masks, apply_masks, csr_parts, prunable_layers, prune_by_magnitude
from pydantic import Field, NonNegativeInt, PositiveInt, model_validator
from torch import nn

from atlas.harness import Profile, Run, Section, TrainConfig, controls, measure, models, reproduction


class Schedule(Section):
    """Eq. (1)'s gradual schedule, in optimizer steps of the pruning stage."""

    final_sparsities: list[float] = Field(min_length=1)  # s_f, one pruned network each
    initial_sparsity: float = Field(0.0, ge=0, lt=1)  # s_i (Sec. 3: "usually 0")
    begin_step: NonNegativeInt = 0  # t0, counted from the pruning stage's first step
    frequency: PositiveInt  # Δt, steps between mask updates (Sec. 3: 100-1000 barely matters)
    updates: PositiveInt  # n, the number of pruning steps after t0
    exponent: float = 3.0  # Eq. (1)'s cube (the released code's sparsity_function_exponent)

    @model_validator(mode="after")
    def _sparsities_in_range(self) -> Schedule:
        if not all(self.initial_sparsity <= s < 1 for s in self.final_sparsities):
            raise ValueError("every final sparsity must lie in [initial_sparsity, 1)")
        return self

    @property
    def end_step(self) -> int:
        """``t0 + n Δt``: the step of the last mask update, at ``s_f``."""
        return self.begin_step + self.updates * self.frequency


class Config(Profile):
    model: Literal["lenet-300-100", "lenet-5"]  # the large model (atlas/harness/models.py)
    dense: TrainConfig  # stage 1: the dense network, the steps before t0
    prune: TrainConfig  # stage 2: gradual pruning then recovery; the baseline and the control get as many
    schedule: Schedule
    versus_small_dense: list[float]  # the final sparsities at which a small-dense model is trained too

    @model_validator(mode="after")
    def _schedule_fits_the_stage(self) -> Config:
        if self.schedule.end_step > self.prune.steps:
            raise ValueError(f"the schedule ends at step {self.schedule.end_step} of a pruning stage of "
                             f"{self.prune.steps} steps")
        if not set(self.versus_small_dense) <= set(self.schedule.final_sparsities):
            raise ValueError("versus_small_dense must be among schedule.final_sparsities")
        return self


def _sgd(steps: int, lr: float, batch_size: int) -> dict:
    """A training stage: SGD with momentum 0.9, weight decay 5e-4, cosine learning rate."""
    return {"steps": steps, "lr": lr, "batch_size": batch_size, "optimizer": "sgd", "weight_decay": 5e-4,
            "schedule": "cosine"}


# Final sparsities: 90% is the abstract's 10x; 50/75/87.5/90% are those the catalogue's unconfirmed
# Table 1-2 values give for InceptionV3 and MobileNet.
PROFILES = {
    "smoke": {
        "dataset": "digits", "seeds": 2, "model": "lenet-300-100",
        "dense": _sgd(90, 0.05, 64), "prune": _sgd(60, 0.05, 64),
        "schedule": {"final_sparsities": [0.5, 0.75, 0.9], "frequency": 5, "updates": 8},
        "versus_small_dense": [0.5, 0.75, 0.9],
    },
    "quick": {
        # 3 seeds x (2,400 dense steps of the LeNet-300-100, 7 x 400 pruning-stage steps (baseline,
        # three pruned networks, three controls) and three small dense MLPs of 2,800 steps, 1/3 to 1/7
        # of a LeNet-300-100 step each): the dense budget is about the one whose baseline comes within
        # 1 pp of its reference (3,000 steps: 89.0%, han2015); the pruning stage is what is left of 60 s.
        "dataset": "fashion-mnist", "seeds": 3, "model": "lenet-300-100",
        "dense": _sgd(2400, 0.05, 128), "prune": _sgd(400, 0.05, 128),
        "schedule": {"final_sparsities": [0.5, 0.75, 0.9], "frequency": 25, "updates": 12},
        "versus_small_dense": [0.5, 0.75, 0.9],
    },
    "paper": {
        # ImageNet, PTB and WMT16 are not in the harness; as for han2015: MNIST and the Caffe LeNet-5,
        # whose width multiplier gives the small-dense models. Caffe's LeNet
        # solver (SGD, lr 0.01, batch 64); Δt = 250 steps (Sec. 3: 100-1000), n = 30, then 2,500
        # steps of recovery.
        "dataset": "mnist", "seeds": 3, "model": "lenet-5",
        "dense": _sgd(10000, 0.01, 64), "prune": _sgd(10000, 0.01, 64),
        "schedule": {"final_sparsities": [0.5, 0.75, 0.875, 0.9], "frequency": 250, "updates": 30},
        "versus_small_dense": [0.5, 0.75, 0.875, 0.9],
    },
}

#: The abstract's "up to 10x reduction in number of non-zero parameters": the claim's sparsity.
TEN_X = 0.9


# ------------------------------------------------------------------------------------ Eq. (1)
def sparsity_at(step: int, schedule: Schedule, final: float) -> float:
    """Eq. (1): the sparsity ``s_t`` after ``step`` steps of the pruning stage (``s_i`` before
    ``t0``, ``s_f`` from ``t0 + n Δt`` on)."""
    t0, span = schedule.begin_step, schedule.updates * schedule.frequency
    if step <= t0:
        return schedule.initial_sparsity
    if step >= t0 + span:
        return final
    return final + (schedule.initial_sparsity - final) * (1.0 - (step - t0) / span) ** schedule.exponent


def update_steps(schedule: Schedule) -> list[int]:
    """The steps at which the masks are updated: ``t0, t0 + Δt, ..., t0 + n Δt``."""
    return [schedule.begin_step + k * schedule.frequency for k in range(schedule.updates + 1)]


class GradualPruner:
    """Automated gradual pruning of every Linear/Conv weight of ``model`` towards ``final`` sparsity:
    at each update step every layer is masked to the ``s_t`` of Eq. (1) by magnitude (a weight once
    pruned stays pruned), and the masks are re-applied after every optimizer step. Pass
    :meth:`after_step` to ``run.train``; call :meth:`start` before training and :meth:`finish`
    after it."""

    def __init__(self, model: nn.Module, schedule: Schedule, final: float) -> None:
        self.schedule, self.final = schedule, final
        self.names = list(prunable_layers(model).values())
        params = dict(model.named_parameters())
        self.masks: Masks = {name: torch.ones_like(params[name], dtype=torch.bool) for name in self.names}
        self.updates = set(update_steps(schedule))
        self.step = 0
        self.sparsity = 0.0  # the sparsity the masks were last updated to

    def prune_to(self, model: nn.Module, sparsity: float) -> None:
        """Mask every layer to ``sparsity`` by magnitude, keeping the pruned weights pruned."""
        self.masks = prune_by_magnitude(model, {name: 1.0 - sparsity for name in self.names}, self.masks)
        self.sparsity = sparsity

    def _maybe_update(self, model: nn.Module) -> None:
        if self.step in self.updates:
            self.prune_to(model, sparsity_at(self.step, self.schedule, self.final))

    def start(self, model: nn.Module) -> None:
        """Before the first step (an update when ``t0 = 0``: ``s_i``)."""
        self._maybe_update(model)

    def after_step(self, model: nn.Module) -> None:
        """After each optimizer step: the pruned weights back to zero (the step moved them), then the
        masks' update when the step is one of :func:`update_steps`."""
        self.step += 1
        apply_masks(model, self.masks)
        self._maybe_update(model)

    def finish(self, model: nn.Module) -> None:
        """After training: ``s_f`` reached (a stage shorter than ``t0 + n Δt`` jumps to it here)."""
        if self.sparsity < self.final:
            self.prune_to(model, self.final)


def gradual_prune(run: Run, model: nn.Module, cfg: TrainConfig, schedule: Schedule, final: float,
                  desc: str = "gradual pruning") -> Masks:
    """Train ``model`` for ``cfg.steps`` steps while :class:`GradualPruner` brings it to ``final``
    sparsity; returns the masks."""
    pruner = GradualPruner(model, schedule, final)
    pruner.start(model)
    run.train(model, run.dataset().train, cfg, desc=desc, after_step=pruner.after_step)
    pruner.finish(model)
    return pruner.masks


# ------------------------------------------------------------------------------ small-dense
def narrow(arch: str, width: float) -> tuple[str, dict]:
    """The harness model ``arch`` made narrower by the width multiplier ``width``, as (name, kwargs):
    LeNet-300-100's hidden layers become ``round(300 w)`` and ``round(100 w)`` units (the harness's
    ``mlp``); LeNet-5 takes ``width`` itself (its two conv and one hidden layers)."""
    if arch == "lenet-300-100":
        return "mlp", {"hidden": [max(1, round(300 * width)), max(1, round(100 * width))]}
    return arch, {"width": width}


def matching_width(count: Callable[[float], int], target: int, iters: int = 40) -> float:
    """The width multiplier in (0, 1] whose model has the parameter count closest to ``target``
    (``count(width)`` is non-decreasing; bisection, then the nearer of the two brackets)."""
    lo, hi = 1e-3, 1.0
    for _ in range(iters):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if count(mid) < target else (lo, mid)
    return min((lo, hi), key=lambda w: (abs(count(w) - target), -w))


def _tag(sparsity: float) -> str:
    """``0.5 -> 's50'``, ``0.875 -> 's87_5'``: a metric-name suffix."""
    return "s" + f"{100 * sparsity:g}".replace(".", "_")


# ------------------------------------------------------------------------- the trained models
def _schedule(run: Run) -> Schedule:
    return Schedule.model_validate(run.config["schedule"])


def _spec(run: Run, **extra: object) -> dict:
    """What determines a model's weights: the architecture and the two stages (the cache key)."""
    return {"model": run.config["model"], "dense": run.train_config("dense").model_dump(),
            "prune": run.train_config("prune").model_dump(), **extra}


def _train_two_stages(run: Run, model: nn.Module, desc: str) -> None:
    """The whole budget of a dense model: the ``dense`` steps, then the ``prune`` steps (their own
    cosine), with the data orders every model of the run shares."""
    run.reseed("zhu2018 dense data")
    run.train(model, run.dataset().train, run.train_config("dense"), desc=f"{desc} dense")
    run.reseed("zhu2018 prune data")
    run.train(model, run.dataset().train, run.train_config("prune"), desc=f"{desc} continued")


def train_dense(run: Run) -> nn.Module:
    """Stage 1: the large network, dense (cached per seed); pruning starts from it."""
    arch = run.config["model"]

    def fit(model: nn.Module) -> None:
        run.reseed("zhu2018 dense data")
        run.train(model, run.dataset().train, run.train_config("dense"), desc=f"{arch} dense")

    spec = {"model": arch, "dense": run.train_config("dense").model_dump()}
    return run.cached_model(f"zhu2018-{arch}-dense", spec, build=lambda: run.model(arch), fit=fit)


def train_baseline(run: Run, dense: nn.Module) -> nn.Module:
    """The uncompressed baseline with the same budget: the dense network trained for the ``prune``
    steps too, without masks, on the same data order (cached per seed)."""
    arch = run.config["model"]

    def fit(model: nn.Module) -> None:
        model.load_state_dict(dense.state_dict())
        run.reseed("zhu2018 prune data")
        run.train(model, run.dataset().train, run.train_config("prune"), desc=f"{arch} baseline continued")

    return run.cached_model(f"zhu2018-{arch}-baseline", _spec(run), build=lambda: run.model(arch), fit=fit)


def train_sparse(run: Run, dense: nn.Module, final: float) -> nn.Module:
    """Large-sparse: the dense network gradually pruned to ``final`` during the ``prune`` steps
    (cached per seed)."""
    arch, schedule = run.config["model"], _schedule(run)

    def fit(model: nn.Module) -> None:
        model.load_state_dict(dense.state_dict())
        run.reseed("zhu2018 prune data")
        gradual_prune(run, model, run.train_config("prune"), schedule, final,
                      desc=f"{arch} gradual pruning to {final:.1%}")

    spec = _spec(run, schedule=schedule.model_dump(), final=final)
    return run.cached_model(f"zhu2018-{arch}-sparse", spec, build=lambda: run.model(arch), fit=fit)


def train_small_dense(run: Run, width: float) -> nn.Module:
    """Small-dense: the architecture at width multiplier ``width``, trained from scratch for the same
    ``dense + prune`` steps (cached per seed)."""
    name, kwargs = narrow(run.config["model"], width)

    def fit(model: nn.Module) -> None:
        _train_two_stages(run, model, f"small-dense {name} {kwargs}")

    return run.cached_model(f"zhu2018-{name}-small-dense", _spec(run, narrow=[name, kwargs]),
                            build=lambda: run.model(name, **kwargs), fit=fit)


def small_dense_for(run: Run, target_params: int) -> tuple[nn.Module, float]:
    """The small-dense model with the parameter count closest to ``target_params`` and its width."""
    data = run.dataset()

    def count(width: float) -> int:
        name, kwargs = narrow(run.config["model"], width)
        return measure.count_params(models.build(name, data.input_shape, data.num_classes, **kwargs))

    width = matching_width(count, target_params)
    return train_small_dense(run, width), width


#: Why the quick profile's 10x claim is not reproduced; shown beside the verdict.
DIAGNOSIS = """
The schedule (Eq. 1), the per-layer masks (each layer exactly at s_t, pruned weights kept at zero)
and the budget were checked: every model of the claim has the same 2,400 dense and 400 pruning-stage
steps, and the baseline is 0.8 pp below its reference. On seeds 10-12 the 10x loss is -1.32 to -1.74
pp for the method, -0.53 to -0.78 pp for one-shot per-layer pruning retrained for the same 400 steps
and -0.24 to -0.57 pp for the global control; leaving the output layer dense or ending the schedule
earlier (200 steps of recovery) gains at most 0.5 pp. With a 1,600-step pruning stage (seeds 10-11)
the method loses -0.67 and -0.85 pp, within the claim's 1 pp and 0.1-0.2 pp behind one-shot pruning.
So the gap is the quick profile's budget (a limit of its 60 s on 2 cores: a gradual schedule needs
steps to recover after its last mask updates), not evidence against the paper's networks, which keep
training long after pruning; the paper profile measures a 10,000-step stage.
"""


@reproduction("zhu2018", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    data = run.dataset()
    arch, schedule = run.config["model"], _schedule(run)
    dense = train_dense(run)
    baseline = train_baseline(run, dense)
    acc_base = run.accuracy(baseline, data.test)

    versus: dict[str, float] = {"baseline_accuracy": acc_base}
    method_curve: dict[float, float] = {}
    small_curve: dict[float, float] = {}
    ten_x: dict[str, float] | None = None
    for final in schedule.final_sparsities:
        tag = _tag(final)
        sparse = train_sparse(run, dense, final)
        acc = run.accuracy(sparse, data.test)
        ratio = round(controls.compression_ratio(sparse), 2)
        method_curve[ratio] = acc
        versus |= {f"sparse_accuracy_{tag}": acc, f"nonzero_params_{tag}": measure.count_nonzero(sparse)}
        if final in run.config["versus_small_dense"]:
            small, width = small_dense_for(run, measure.count_nonzero(sparse))
            small_curve[ratio] = acc_small = run.accuracy(small, data.test)
            versus |= {
                f"small_dense_accuracy_{tag}": acc_small, f"gain_vs_small_dense_{tag}_pp": acc - acc_small,
                f"small_dense_params_{tag}": measure.count_params(small), f"small_dense_width_{tag}": width,
            }
        if final == TEN_X:
            params = dict(sparse.named_parameters())
            masks = {name: params[name].detach() != 0 for name in prunable_layers(sparse).values()}
            ten_x = {
                **measure.accuracy_change(acc_base, acc),
                "weight_compression": ratio,
                **measure.compression_metrics(baseline, sparse, data.input_shape, csr_parts(sparse, masks)),
            }

    method = controls.Series("gradual pruning (Eq. 1)", controls.RATIO, controls.ACCURACY, method_curve)
    budget = (f"{run.config['dense']['steps']} dense steps, then {run.config['prune']['steps']} steps in "
              f"which Eq. (1) runs over {schedule.end_step} (Δt = {schedule.frequency}, n = {schedule.updates})")
    run.record(
        "imagenet-ptb-wmt16-en-de-large-sparse-vs", model=f"{arch} gradually pruned vs narrower dense {arch}",
        metrics=versus, baseline=(arch, "baseline_accuracy"),
        curves=[method, controls.Series("small-dense (same non-zero parameters, same steps)", controls.RATIO,
                                        controls.ACCURACY, small_curve, control=True)],
        differs=f"{data.name}, the harness's {arch} instead of the paper's models; {budget}; small-dense = "
                "the same architecture at one width multiplier with the parameter count closest to the "
                "sparse one's non-zero count, trained from scratch for the same steps",
    )
    if ten_x is not None:
        ratios = sorted(method_curve)
        run.record(
            "ten-x-minimal-loss", model=f"{arch} gradually pruned to {TEN_X:.0%}", metrics=ten_x,
            baseline=(arch, "baseline_accuracy"),
            curves=[method, controls.pruning_curve(run, dense, ratios, run.train_config("prune"))],
            differs=f"{data.name}, the harness's {arch}; {budget}; baseline = the dense network given the "
                    "same pruning-stage steps without masks",
            diagnosis=DIAGNOSIS,
        )
