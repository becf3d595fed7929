"""FitNets: Hints for Thin Deep Nets (Romero, Ballas, Kahou, Chassang, Gatta & Bengio, ICLR 2015; arXiv:1412.6550).

Method (Sec. 2): a *thin and deep* student (a FitNet) is trained from a wider, shallower teacher in
two stages.

1. **Hint-based training** (Sec. 2.2): the output of one hidden layer of the teacher, the *hint*
   ``u_h``, guides one hidden layer of the student, the *guided layer* ``v_g``. As the student is
   thinner, a convolutional *regressor* ``r`` (with the hint's non-linearity, a ReLU here) maps the
   guided layer to the hint's shape, and the student's layers up to the guided layer, with the
   regressor, are trained to minimise ``L_HT = 1/2 || u_h(x) - r(v_g(x)) ||²``.
2. **Knowledge distillation** of the whole student (Sec. 2.1/2.3), initialised from stage 1:
   ``L_KD = H(y, P_S) + lambda * H(P_T^tau, P_S^tau)``, the soft term being Hinton et al.'s
   (imported from :mod:`reproductions.hinton2015`, divided by its ``tau²`` factor to match the
   paper's equation), with ``lambda`` annealed linearly from 4 to 1 over training (Sec. 3).

Claims: Table 4 (MNIST) gives the same ~30K-parameter thin-deep student 1.9% error trained on the
labels, 0.65% with KD alone and 0.51% with hints + KD (FitNet): the FitNet beats the hard-label
student by 1.39 points and the KD-only student by 0.14. Table 1 (CIFAR-10) has the FitNet (2.5M)
beat its maxout teacher (9M) by 1.43 points.

Harness differs: Fashion-MNIST subsampled (``train_limit``), a short budget of optimizer steps, no
augmentation. Every student gets the same ``student.steps`` on the same data: the FitNet spends
``hint.steps`` of them on stage 1 and the rest on stage 2, so it gets no more updates than the
hard-label and KD students it is compared with (the paper trains each stage to convergence). The
teacher is the harness's ``vgg-small`` at a small width (6 conv layers, 3 stages), not a maxout
network; the student a thin 9-layer conv net (3 stages of 3 conv-BN-ReLU layers, :class:`ConvNet`);
the hint is the teacher's second stage (its middle) and the guided layer the student's second stage,
which have the same spatial size here, so the regressor is a 3x3 convolution with padding. Compared
on the same data and schedule: hard labels, KD alone, hints + KD.

Recorded metrics besides the standard ones: ``kd_accuracy`` (KD-only student), ``kd_gain_pp`` (KD
minus hard labels), ``fitnet_over_kd_pp`` (FitNet minus KD), ``hint_loss`` (final stage-1 loss per
element).

The convolutional teacher (:func:`atlas.harness.teachers.conv_teacher`), the thin student
(:class:`atlas.harness.convnets.ConvNet`) and the stage feature maps are the harness's, shared with
the later feature-based papers; this file holds FitNets' method: the hint regressor, the two stages
and :func:`kd_loss_annealed`.

Verdict history: The first published record (commit 4bf7cd9, 2026-11-25) said "partly", with ``mnist-
fitnet`` passing on a mean of 0.71 pp whose spread (1.54) was larger than the mean. The verdict rules have changed since (CONTRIBUTING.md, "Verdict history"): a different verdict
comes from them, not from a change of the method.

Re-examined (2026-12-04) after the quick record's "not reproduced" (the FitNet below the hard-label student). The method
was checked against the paper (Sec. 2.2-2.3: an L2 hint loss through a convolutional regressor with
the hint's non-linearity, training of the layers up to the guided one, then KD of the whole student
with lambda annealed 4 -> 1 and no tau² factor): it follows it; released re-implementations
(RepDistiller, mdistiller) instead train the hint jointly with CE (weight 100), which this file does
not adopt. Measured on seed 100 (not the published seeds; one seed, a direction only): the quick
profile's split of the 320-step budget (90 hint + 230 KD steps) leaves the FitNet 5.9 pp below the
hard-label student (77.54 vs 83.39); giving stage 2 the full 320 steps, and the hard-label student the
same 410 steps in all, narrows it to 2.6 pp (81.39 vs 84.02). Half the gap is thus the budget split of
a budget far from convergence; the rest is taken to be the harness's weak shared teacher (87.94, equalled
by a 3-conv student given 4x the steps in zagoruyko2017's experiment), not the method. The record
carries this as its ``diagnosis``.

Re-examined again (2026-12-04, second session) with the shared conv teacher trained on the whole
training set (``full_training_set``): KD now gains (+1.5 pp on seeds 100-102), the FitNet still
loses 2.5 pp to the hard-label student; the diagnosis above records this.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from atlas_reproductions.hinton2015 import distillation_loss, teacher_logits
from torch import nn

from atlas.harness import Profile, Run, Section, TrainConfig, Tuned, measure, reproduction
from atlas.harness.convnets import (
    conv_student,
    data_note,
    forward_stages,
    layers_upto,
    remaining_steps,
    stage_channels,
    student_sgd,
    teacher_stage_outputs,
    train_conv_student,
)
from atlas.harness.teachers import CONV_TEACHER, ConvTeacherTraining, conv_teacher, conv_teacher_data


class FitNetShape(Section):
    chans: list[int]  # channels of the student's stages (thin: fewer than the teacher's)
    per_stage: int  # conv layers per stage (deep: more than the teacher's two)
    hint_stage: int  # the teacher's stage whose output is the hint
    guided_stage: int  # the student's stage whose output is the guided layer


class Config(Profile):
    conv_teacher: ConvTeacherTraining
    fitnet: FitNetShape
    hint: TrainConfig  # stage 1: the hint-based training of the layers up to the guided one
    student: TrainConfig  # every student's whole budget; the FitNet's stage 2 gets what stage 1 left
    temperature: float  # tau of the KD term
    lambda_start: float  # lambda of the KD term, annealed linearly ...
    lambda_end: float  # ... to this value over the stage


#: Why the atlas does not take its "not reproduced" as the paper's; shown beside the verdict.
DIAGNOSIS = """
The two stages follow the paper (L2 hint loss through a conv regressor with ReLU, then KD with
lambda annealed 4 -> 1); RepDistiller and mdistiller train the hint jointly with CE instead. With
the shared teacher now trained on the whole training set (89.27%, 4.4 pp above the 6,000-example
hard-label student, as WRN-40-1 is about 2 pp above WRN-16-1 in the paper), on seeds 100-102 (not
the published seeds) KD gains +1.5 pp (2.68, 1.83, 0.00) on the thin 9-conv student but the FitNet
trails the hard-label student by 2.5 pp (-3.06, -2.67, -1.76). Earlier (seed 100, weaker teacher)
giving stage 2 the full 320 steps after the hints halved the gap: the quick profile's split of a
budget far from convergence costs the FitNet its KD steps. The atlas takes the gap to be the
two-stage method's at a budget of about 3 epochs, where the paper trains each stage to convergence;
it is not evidence against the paper's CIFAR-10 and MNIST results. On a validation split (the
training set's last 10,000 examples, seeds 1000-1001, benchmarks/results/tuning-cpu-amd-epyc-2core.md) the FitNet trails the hard-label student
at every temperature tried (2, 3, 4: -5.3, -3.7, -3.5 pp); tau = 4 and the hard-label student's best
learning rate (0.025) are the profile's.
"""



#: The KD term's temperature, chosen on a validation split (``benchmarks/tune.py``).
TUNED = Tuned(key="temperature", grid=[2.0, 3.0, 4.0],
              source="the KD term of stage 2; the profile's tau = 3, the paper's value not confirmed from its text")

PROFILES = {
    "smoke": {
        **CONV_TEACHER["smoke"], "seeds": 1,
        "fitnet": {"chans": [4, 8, 16], "per_stage": 2, "hint_stage": 1, "guided_stage": 1},
        "hint": student_sgd(4, 128), "student": student_sgd(11, 128),
        "temperature": 3.0, "lambda_start": 4.0, "lambda_end": 1.0,
    },
    "quick": {
        # Every student gets ``student.steps`` optimizer steps; the FitNet spends ``hint.steps`` of them
        # on stage 1 and the rest on stage 2 (same budget and data as the hard-label and KD students).
        # 160 steps fit the 90 s budget (320 took 138 s cold on 2 cores, 190 took 85 s).
        **CONV_TEACHER["quick"], "seeds": 3,
        "fitnet": {"chans": [6, 12, 24], "per_stage": 3, "hint_stage": 1, "guided_stage": 1},
        "hint": student_sgd(45, 64), "student": student_sgd(160, 64, lr=0.025),
        # tau and the students' learning rate were chosen on a validation split
        # (benchmarks/results/tuning-cpu-amd-epyc-2core.md): tau = 4 of 2, 3 and 4; lr = 0.025, the
        # hard-label student's best of 0.025, 0.05 and 0.1.
        "temperature": 4.0, "lambda_start": 4.0, "lambda_end": 1.0,
    },
    "paper": {
        # Sec. 4.1 (CIFAR-10): FitNet 4 has 19 layers (17 conv + maxout); here a 3x5 conv-BN-ReLU net.
        **CONV_TEACHER["paper"], "seeds": 3,
        "fitnet": {"chans": [32, 64, 128], "per_stage": 5, "hint_stage": 1, "guided_stage": 1},
        "hint": student_sgd(23438, 128), "student": student_sgd(85938, 128),
        "temperature": 3.0, "lambda_start": 4.0, "lambda_end": 1.0,
    },
}


def kd_loss_annealed(run: Run, teacher_out: torch.Tensor, steps: int
                     ) -> Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """FitNets' KD objective ``H(y, P_S) + lambda * H(P_T^tau, P_S^tau)`` with ``lambda`` annealed
    linearly from ``lambda_start`` to ``lambda_end`` over the ``steps`` training steps. The soft term
    is Hinton's (:func:`reproductions.hinton2015.distillation_loss` with weight 1) divided by its
    ``tau²``, as the paper's equation has no such factor."""
    tau = run.config["temperature"]
    lam0, lam1 = run.config["lambda_start"], run.config["lambda_end"]
    total = max(1, steps)
    teacher_out = teacher_out.to(run.device)
    state = {"step": 0}

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        lam = lam0 + (lam1 - lam0) * min(1.0, state["step"] / total)
        state["step"] += 1
        out = model(x)
        soft = distillation_loss(out, teacher_out[idx], y, tau, 1.0) / tau**2
        return F.cross_entropy(out, y) + lam * soft

    return loss


# ---------------------------------------------------------------------------- FitNets, stage 1
def hint_regressor(student_channels: int, teacher_channels: int) -> nn.Module:
    """The convolutional regressor ``r``: guided layer -> hint's shape, with the hint's ReLU."""
    return nn.Sequential(nn.Conv2d(student_channels, teacher_channels, 3, padding=1), nn.ReLU())


def hint_training(run: Run, student: nn.Module, teacher: nn.Module) -> float:
    """Stage 1: train the student's layers up to the guided layer, and the regressor, to minimise
    ``1/2 ||u_h - r(v_g)||²`` (averaged per element and example here). Returns the final loss."""
    spec = run.config["fitnet"]
    hint, guided = spec["hint_stage"], spec["guided_stage"]
    regressor = hint_regressor(stage_channels(student)[guided], stage_channels(teacher)[hint]).to(run.device)
    hints = teacher_stage_outputs(run, teacher, [hint])[hint]
    last = {"loss": float("nan")}

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        u = hints[idx.to(hints.device)]
        v = forward_stages(model, x, upto=guided)[1][guided]
        value = 0.5 * (u - regressor(v)).pow(2).mean()
        last["loss"] = value.item()
        return value

    params = layers_upto(student, guided) + list(regressor.parameters())
    run.train(student, run.dataset().train, run.train_config("hint"), desc="FitNet stage 1 (hints)",
              loss_fn=loss, params=params)
    return last["loss"]


@reproduction("romero2015", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    data = run.dataset()
    spec = run.config["fitnet"]
    teacher = conv_teacher(run)
    logits = teacher_logits(run, teacher)

    steps = run.config["student"]["steps"]
    hard = train_conv_student(run, conv_student(run, spec["chans"], spec["per_stage"]), "student (hard labels)")
    kd = train_conv_student(run, conv_student(run, spec["chans"], spec["per_stage"]), "student (KD)",
                            loss_fn=kd_loss_annealed(run, logits, steps))
    # The FitNet's two stages share the same budget: hint steps, then the rest of the student's.
    fitnet = conv_student(run, spec["chans"], spec["per_stage"])
    hint_loss = hint_training(run, fitnet, teacher)
    stage2 = remaining_steps(run, "hint")
    fitnet = train_conv_student(run, fitnet, "FitNet stage 2 (KD)", loss_fn=kd_loss_annealed(run, logits, stage2),
                                steps=stage2)

    acc_teacher = run.accuracy(teacher, data.test)
    acc_hard, acc_kd, acc_fit = (run.accuracy(m, data.test) for m in (hard, kd, fitnet))
    size = measure.compression_metrics(teacher, fitnet, data.input_shape)
    metrics = {
        "teacher_accuracy": acc_teacher, "baseline_accuracy": acc_teacher,
        "student_accuracy": acc_hard, "kd_accuracy": acc_kd, "accuracy": acc_fit,
        "accuracy_change_pp": acc_fit - acc_teacher,
        "distillation_gain_pp": acc_fit - acc_hard, "kd_gain_pp": acc_kd - acc_hard,
        "fitnet_over_kd_pp": acc_fit - acc_kd, "hint_loss": hint_loss,
        "params": size["params"], "param_compression": size["param_compression"],
        "flops": size["flops"], "flop_reduction": size["flop_reduction"],
    }
    depth = len([m for m in fitnet.modules() if isinstance(m, nn.Conv2d)])
    model = (f"teacher vgg-small x{run.config['conv_teacher']['width']} (6 conv) -> FitNet "
             f"{depth} conv {'-'.join(map(str, spec['chans']))}")
    differs = (f"{data_note(run)}, every student "
               f"{steps} steps (the FitNet {run.config['hint']['steps']} hint + {stage2} KD steps), "
               f"teacher {run.config['conv_teacher']['steps']} steps, no augmentation; teacher is a small "
               "VGG-style conv net, not maxout; hint = teacher's stage 2, guided = student's stage 2")
    # The gain is over the hard-label student (the FitNet's architecture): the model whose
    # convergence the verdict checks.
    run.record("mnist-fitnet", model=model, metrics=metrics, differs=differs, diagnosis=DIAGNOSIS,
               baseline=("staged-conv", "student_accuracy"),
               baseline_spec={"chans": list(spec["chans"]), "per_stage": spec["per_stage"]})
    # This claim's baseline is the (uncompressed) teacher, a harness model.
    run.record("cifar10-fitnet", model=model, metrics=metrics, differs=differs, diagnosis=DIAGNOSIS,
               baseline=("vgg-small", "teacher_accuracy"), baseline_spec={"width": run.config["conv_teacher"]["width"]},
               baseline_data=conv_teacher_data(run))
