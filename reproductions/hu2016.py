"""Harnessing Deep Neural Networks with Logic Rules (Hu, Ma, Liu, Hovy & Xing, ACL 2016;
arXiv:1603.06318).

Method (Sec. 3): first-order logic rules ``R_l`` with confidences ``lambda_l`` are written in soft
logic (truth values in [0, 1]; ``A => B = min(1, 1 - A + B)``) and transferred into a network's
weights by *iterative distillation*. At every iteration the *teacher* ``q(y|x)`` is the projection of
the *student* ``p_theta(y|x)`` onto the rule-constrained subspace (posterior regularisation), which
has the closed form

    q(y|x) ∝ p_theta(y|x) * exp(-C * sum_l lambda_l * (1 - r_l(x, y))),

and the student is updated to balance the true labels against imitating the teacher,

    theta <- argmin (1/N) sum_n (1 - pi) * CE(y_n, p_theta(x_n)) + pi * CE(q(x_n), p_theta(x_n)),

with the imitation weight annealed, ``pi(t) = min(pi_0, 1 - 0.95^t)`` (t: training progress in
epochs, fractional, in the paper and its released code, which sets ``pi_0`` = 1 and C = 6; here t
counts units of ``pi_unit_steps`` optimizer steps, one pass over the profile's training subset, so
the schedule is fixed in steps). Both networks are usable at test time: the student ``p`` alone, or the
teacher ``q`` (the student projected with the rules, which needs the rule features of the input).

Claim (sentiment results, SST-2; the A-but-B rule): the CNN distilled with the rule beats the same
CNN trained without it, and the teacher q is better still (89.3 % for q).

Harness differs (the harness has no text): Fashion-MNIST with three rules stated on its classes,
over shape features computed from the pixels alone (never from labels), each true of clothing and
footwear as such:

* ``low(x) => not Ankle boot``: an object much wider than tall (height/width of its bounding box
  below ~0.5) is a low shoe; an ankle boot has a shaft.
* ``long_sleeves(x) => not T-shirt/top``: a tall garment whose outline is as wide near the hem as at
  the chest has sleeves reaching down; a T-shirt's sleeves are short.
* ``open(x) => not Sneaker and not Ankle boot``: a wide object whose silhouette fills less than half
  of its bounding box is an open (strappy) shoe, a sandal.

Truth values are piecewise-linear ramps of the features (:func:`rule_features`); each rule's
grounding is ``r_l(x, y) = 1 - A_l(x) * [y in E_l]`` (Lukasiewicz implication with the excluded
classes ``E_l``). Measured on the Fashion-MNIST training labels, only for documentation, the
truth-weighted violation rates are 3.1 %, 3.9 % and 1.1 % respectively. ``C`` = 6 and
``lambda_l`` = 1 as for the paper's sentiment rule. The smoke profile (8x8 digits) runs the same code
with the same class indices, where the rules mean nothing.

Quick profile: a 784-128-10 MLP on a 5,000-image subset of Fashion-MNIST (the setting where prior
knowledge can matter: limited data), the full test set, 1,563 SGD steps of 64 for both nets (from the
same initial weights, in the same data order); the net without rules is the declared baseline.
Metrics: ``student_accuracy`` (the same net without rules), ``accuracy`` (the rule-distilled
student p), ``teacher_q_accuracy`` (its teacher q), ``distillation_gain_pp`` (p minus the net
without rules), ``teacher_q_gain_pp`` (q minus the net without rules), and ``baseline_q_gain_pp``
(the net without rules projected with the rules at test time only, minus itself: how much of q's
gain the rules give without any distillation).

Verdict history: The first published record (commit 4bf7cd9, 2026-11-25) said "not reproduced", with
budgets counted in epochs and the verdict decided by the mean alone. Since then a check is decided on
the 95% interval over at least three seeds (inconclusive when it straddles the threshold, or when the
baseline is more than 1 pp below its reference accuracy), budgets are optimizer steps, and shared
teachers are trained once per profile; a verdict that differs from the first record's comes from these
rules, not from a change of the method.

Re-examined for issue 11 (the quick record's "not reproduced"). The method was re-read against the
released code (ZhitingHu/logicnn: ``LogicNN``, ``FOL``, ``get_pi``, ``logicnn_sentiment.py``) and
matches it: q = p * exp(-C * sum_l lambda_l (1 - r_l)), renormalised and held fixed (no gradient);
the loss ``(1 - pi) CE(y, p) + pi CE(q, p)`` on the same forward pass; ``pi = 1 - max(0.95^t, 0)``
with t in fractional epochs; C = 6, lambda = 1; test-time q = p times the rule factor. Differences
that remain: the released code trains Kim's CNN with Adadelta, dropout and a max-norm for 11 epochs,
and its ``calc_rule_constraints`` adds the last rule's term twice (an effective C of 12 on its one
rule), a *stronger* projection. The baseline converged (84.3 % on seeds 100-102, reference 84.0 %).
Measured on seeds 100-102 (quick profile): distillation_gain_pp -0.17 [-0.29, -0.06],
teacher_q_gain_pp -0.51 [-0.66, -0.36], and baseline_q_gain_pp -0.33 (the rules applied at test time
to the net trained without them). Per rule (seed 100, test set, net without rules): the antecedents
fire (A > 0.5) on 5,218 images; on 149 of them the true class is one the rule excludes, while the net
predicts an excluded class wrongly on only 35. So the projection fixes 39 predictions and breaks 77
(C = 2: 16 and 45; C = 1: 8 and 30); with 1,000 training images instead of 5,000 (net 80 %) it still
fixes fewer than it breaks (45 vs 58, 42 vs 51 on seeds 100-101). No value of C makes these rules
help, so the record carries a diagnosis: the gap is the analogue's rules (less reliable than what
the MLP already knows where they fire), not the method; the harness has no text task for the paper's
A-but-B rule.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt
from torch import nn

from atlas.harness import Profile, Run, TrainConfig, Tuned, reproduction
from atlas.harness.data import Split

#: Fashion-MNIST class indices.
T_SHIRT, TROUSER, PULLOVER, DRESS, COAT, SANDAL, SHIRT, SNEAKER, BAG, ANKLE_BOOT = range(10)

#: (name, excluded classes E_l): the rule "A_l(x) => y not in E_l".
RULES: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("low", (ANKLE_BOOT,)),
    ("long_sleeves", (T_SHIRT,)),
    ("open", (SNEAKER, ANKLE_BOOT)),
)


#: Why the atlas believes its "not reproduced" is the harness's analogue, not the method (issue 11).
DIAGNOSIS = """
The projection q = p*exp(-C*sum(lambda*(1-r))), the loss (1-pi)*CE(y,p) + pi*CE(q,p), the schedule
pi = min(1, 1-0.95^t) and C = 6, lambda = 1 match the authors' released code, and the net without
rules converged (84.3 % on seeds 100-102, reference 84.0 %). On seeds 100-102 the student p loses
0.17 pp [-0.29, -0.06] and the teacher q 0.51 pp [-0.66, -0.36], and the same rules applied at test
time to the net trained without them already lose 0.33 pp: on seed 100 they fire on 5,218 test
images, 149 of which truly belong to a class the rule excludes, while the net wrongly predicts an
excluded class on only 35, so q fixes 39 predictions and breaks 77 (C = 1: 8 and 30; with 1,000
training images: 45 and 58). The atlas believes the gap is its analogue's, not the method's: its
pixel-shape rules on Fashion-MNIST are less reliable than what the MLP already learns where they
fire, whereas the paper's premise is that its A-but-B rule encodes linguistic knowledge the data
alone does not teach a sentence CNN, and the harness has no text task to test that rule on.
C chosen on a validation split (the training set's last 10,000 examples, seeds 1000-1001,
benchmarks/results/tuning-cpu-amd-epyc-2core.md) is 1, the weakest of 1, 6 and 20: the student then matches the net without rules (85.16% vs
85.19%), and stronger rules cost more (6: -0.20 pp, 20: -0.37 pp).
"""


class Config(Profile):
    train: TrainConfig  # both nets alike: without rules and with them (iterative distillation)
    hidden: list[PositiveInt]  # the MLP's hidden layers
    C: float  # C, the strength of the rules in the projection q (Sec. 3; the released code: 6)
    # lambda_l, one confidence per rule of RULES (1, as for the paper's sentiment rule)
    rule_weights: list[float] = Field(min_length=len(RULES), max_length=len(RULES))
    pi_decay: float  # the base of the imitation schedule pi(t) = min(pi_0, 1 - decay^t) (Sec. 3: 0.95)
    pi_max: float  # pi_0, the schedule's ceiling (the released code: 1)
    pi_unit_steps: PositiveInt  # optimizer steps per unit of the schedule's t


#: The rules' strength C, chosen on a validation split (``benchmarks/tune.py``).
TUNED = Tuned(key="C", grid=[1.0, 6.0, 20.0], lr_section="train",
              source="C = 6 for sentiment classification, as in the authors' released code")

PROFILES = {
    # Budgets in optimizer steps. ``pi_unit_steps``: the steps per unit of the imitation schedule's t
    # (the paper's t counts epochs; here a fixed number of steps, one epoch of the profile's set).
    "smoke": {
        "dataset": "digits", "seeds": 2,
        "train": {"steps": 90, "batch_size": 64, "lr": 0.05, "optimizer": "sgd"},
        "hidden": [32], "C": 6.0, "rule_weights": [1.0, 1.0, 1.0], "pi_decay": 0.95, "pi_max": 1.0,
        "pi_unit_steps": 22,
    },
    "quick": {
        # 1,563 steps of 64 = 20 passes over the 5,000-image subset; t advances by 1 every 78 steps.
        # C and the learning rate were chosen on a validation split
        # (benchmarks/results/tuning-cpu-amd-epyc-2core.md): C = 1 of 1, 6 and 20; lr = 0.025, the
        # net-without-rules' best of 0.025, 0.05 and 0.1.
        "dataset": "fashion-mnist", "seeds": 5, "train_limit": 5000,
        "train": {"steps": 1563, "batch_size": 64, "lr": 0.025, "optimizer": "sgd"},
        "hidden": [128], "C": 1.0, "rule_weights": [1.0, 1.0, 1.0], "pi_decay": 0.95, "pi_max": 1.0,
        "pi_unit_steps": 78,
    },
    "paper": {
        # SST-2 with a CNN is not in the harness; the closest setting: the full Fashion-MNIST set
        # (48,000 steps of 50 = 40 epochs of 60,000 images).
        "dataset": "fashion-mnist", "seeds": 3,
        "train": {"steps": 48000, "batch_size": 50, "lr": 0.05, "optimizer": "sgd"},
        "hidden": [300, 100], "C": 6.0, "rule_weights": [1.0, 1.0, 1.0], "pi_decay": 0.95, "pi_max": 1.0,
        "pi_unit_steps": 1200,
    },
}


# ------------------------------------------------------------------------------ rule features
def _extent(mask: torch.Tensor) -> torch.Tensor:
    """Length of the span from the first to the last True along dim 1 (0 where none)."""
    n = mask.shape[1]
    first = mask.float().argmax(1)
    last = n - 1 - mask.flip(1).float().argmax(1)
    return torch.where(mask.any(1), (last - first + 1).float(), torch.zeros_like(first, dtype=torch.float32))


def _ramp(v: torch.Tensor, zero_at: float, one_at: float) -> torch.Tensor:
    """A soft truth value: 0 at ``zero_at``, 1 at ``one_at``, linear in between, clipped."""
    return ((v - zero_at) / (one_at - zero_at)).clamp(0.0, 1.0)


def rule_features(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Soft truth values (N, 3) of the rules' antecedents ``low``, ``long_sleeves``, ``open``, from
    the pixels only. ``lo``/``hi``: the data set's darkest and brightest (normalised) pixel values,
    so that ``lit`` means brighter than 5 % of the range."""
    img = x[:, 0] if x.dim() == 4 else x
    lit = (img - lo) / (hi - lo) > 0.05
    rows = img.shape[1]
    height = _extent(lit.any(2))
    width = _extent(lit.any(1))
    aspect = height / width.clamp_min(1)
    fill = lit.float().sum((1, 2)) / (height * width).clamp_min(1)
    chest = _extent(lit[:, int(0.29 * rows)])
    hem = _extent(lit[:, int(0.82 * rows)])
    low = _ramp(aspect, 0.6, 0.45)
    long_sleeves = _ramp(aspect, 0.9, 1.1) * _ramp(hem / chest.clamp_min(1), 0.95, 1.1)
    open_shoe = _ramp(fill, 0.5, 0.4) * _ramp(aspect, 1.0, 0.8)
    return torch.stack([low, long_sleeves, open_shoe], dim=1)


def rule_penalty(features: torch.Tensor, num_classes: int, weights: list[float]) -> torch.Tensor:
    """``sum_l lambda_l * (1 - r_l(x, y))`` for every class y: (N, K). With ``r_l = 1 - A_l(x) [y in E_l]``
    the distance from truth is ``A_l(x)`` on the excluded classes and 0 elsewhere."""
    pen = torch.zeros(len(features), num_classes, device=features.device)
    for (_, excluded), a, lam in zip(RULES, features.T, weights, strict=True):
        for k in excluded:
            if k < num_classes:
                pen[:, k] += lam * a
    return pen


def project(student_logits: torch.Tensor, penalty: torch.Tensor, C: float) -> torch.Tensor:
    """The teacher: ``q ∝ p * exp(-C * penalty)``, returned as log-probabilities."""
    return F.log_softmax(F.log_softmax(student_logits, dim=1) - C * penalty, dim=1)


def imitation_weight(t: float, decay: float, pi_max: float) -> float:
    """``pi(t) = min(pi_0, 1 - decay^t)``."""
    return min(pi_max, 1.0 - decay**t)


def rule_distillation_loss(logits: torch.Tensor, labels: torch.Tensor, penalty: torch.Tensor, C: float,
                           pi: float) -> torch.Tensor:
    """``(1 - pi) * CE(y, p) + pi * CE(q, p)`` with the teacher q built from the current student
    and held fixed (no gradient through q)."""
    log_p = F.log_softmax(logits, dim=1)
    with torch.no_grad():
        q = project(logits, penalty, C).exp()
    return (1.0 - pi) * F.nll_loss(log_p, labels) - pi * (q * log_p).sum(1).mean()


# ------------------------------------------------------------------------------------ training
def _range(run: Run) -> tuple[float, float]:
    train = run.dataset().train
    return train.x.min().item(), train.x.max().item()


def train_plain(run: Run) -> nn.Module:
    """The same network trained on the labels alone, from the same initial weights and in the same
    data order as :func:`train_with_rules`."""
    run.reseed("net")
    net = run.model("mlp", hidden=run.config["hidden"])
    return run.train(net, run.dataset().train, run.train_config("train"), desc="no rules")


def train_with_rules(run: Run) -> nn.Module:
    """Iterative rule distillation: each step projects the student onto the rules (teacher q) and
    trains the student towards both the labels and q, with pi annealed over the steps
    (t = step / ``pi_unit_steps``)."""
    data = run.dataset()
    cfg = run.train_config("train")
    lo, hi = _range(run)
    C, weights = run.config["C"], run.config["rule_weights"]
    decay, pi_max, unit = run.config["pi_decay"], run.config["pi_max"], run.config["pi_unit_steps"]
    step = [0]

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        step[0] += 1  # t after this batch, as in the released code (batch / batches per epoch)
        pi = imitation_weight(step[0] / unit, decay, pi_max)
        penalty = rule_penalty(rule_features(x, lo, hi), data.num_classes, weights)
        return rule_distillation_loss(model(x), y, penalty, C, pi)

    run.reseed("net")
    net = run.model("mlp", hidden=run.config["hidden"])
    return run.train(net, data.train, cfg, desc="with rules (iterative distillation)", loss_fn=loss)


def teacher_accuracy(run: Run, model: nn.Module, split: Split) -> float:
    """Accuracy (%) of the teacher q: the model's predictions projected with the rules."""
    lo, hi = _range(run)
    penalty = rule_penalty(rule_features(split.x, lo, hi), run.dataset().num_classes, run.config["rule_weights"])
    q = project(run.predict(model, split), penalty, run.config["C"])
    return 100.0 * (q.argmax(1) == split.y).float().mean().item()


@reproduction("hu2016", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    data = run.dataset()
    plain = train_plain(run)
    ruled = train_with_rules(run)
    acc_plain = run.accuracy(plain, data.test)
    acc_p = run.accuracy(ruled, data.test)
    acc_q = teacher_accuracy(run, ruled, data.test)
    acc_plain_q = teacher_accuracy(run, plain, data.test)
    run.record(
        "sst2-rules",
        model=f"MLP 784-{'-'.join(map(str, run.config['hidden']))}-10 with 3 shape rules (p and q)",
        metrics={
            "student_accuracy": acc_plain,
            "accuracy": acc_p,
            "teacher_q_accuracy": acc_q,
            "distillation_gain_pp": acc_p - acc_plain,
            "teacher_q_gain_pp": acc_q - acc_plain,
            "baseline_q_gain_pp": acc_plain_q - acc_plain,
        },
        baseline=("mlp", "student_accuracy"), baseline_spec={"hidden": list(run.config["hidden"])},
        differs=f"Fashion-MNIST ({len(data.train)} training images) with three pixel-shape rules on its classes "
                f"instead of SST-2 with the A-but-B rule; an MLP instead of Kim's CNN; {run.config['train']['steps']} "
                f"steps of batch {run.config['train']['batch_size']} for both nets; "
                "no unlabeled data",
        diagnosis=DIAGNOSIS,
    )
