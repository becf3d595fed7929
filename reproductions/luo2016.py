"""Face Model Compression by Distilling Knowledge from Neurons (Luo, Zhu, Liu, Wang & Tang, AAAI 2016).

Method: instead of the teacher's (soft) label probabilities, which for tens of thousands of face
identities are high-dimensional and hard to fit, the student regresses the responses of a *selected
subset of neurons* of the teacher's top hidden layer, with an L2 loss. The neurons are chosen by
the paper's neuron selection: a neuron is worth keeping when it is *informative* (its response
discriminates the face attributes / identities) and the kept neurons should have *low correlation*
with each other (no redundant supervision). The paper scores each neuron by its discriminativeness
to attributes (a unary term) and penalises the correlation between pairs of neurons (a pairwise
term), and selects the subset that maximises the resulting objective. The student's regressed
neurons are then its face representation, used by a separately trained verifier.

Claim (abstract, LFW): a compact student mimicking the selected neurons of a single DeepID2+ or
DeepID3 teacher verifies faces *better than its teacher*; mimicking an ensemble of DeepID2+ it
still outperforms the ensemble with 51.6x compression and 90x speed-up. The relative quantity
checked is ``student_minus_teacher_pp`` (also recorded as ``accuracy_change_pp``, the harness's
"compressed minus uncompressed"): the paper claims it is >= 0.

Harness differs (an analogue, not comparable in absolute terms): image classification instead of face
verification. The teacher is the shared deep MLP (784-1200-1200-10 with dropout,
:func:`atlas.harness.teachers.mlp_teacher`); its top hidden layer (1,200 ReLU units) is the layer
the neurons are selected from. The "attributes" are the data set's classes, each taken as a
one-vs-rest attribute. Selection, an honest reading of the criterion (the paper optimises its unary
+ pairwise objective by mean-field inference; here greedily, as in minimum-redundancy
maximum-relevance selection):

* informativeness ``u_i``: the mutual information between neuron i's response (quantised into
  ``bins`` quantile bins) and the class, normalised to [0, 1] over the layer;
* redundancy: the absolute Pearson correlation ``|rho_ij|`` between two neurons' responses;
* greedy selection of ``k`` neurons, each step adding the neuron maximising
  ``u_i - lambda * mean_{j selected} |rho_ij|``.

The student (an MLP whose output layer has one linear unit per selected neuron) regresses the
selected neurons' values with L2; its outputs are then its representation, and a linear softmax
classifier is fitted on them with the labels (the student frozen), the analogue of the paper's
verifier trained on the student's features. The comparison is the same student (same layers plus
the same classifier) trained end to end on the hard labels. Statistics for the selection are
computed on ``select_examples`` training images.

Metrics besides the standard ones: ``student_minus_teacher_pp`` (distilled student minus teacher),
``neurons_selected``, ``mean_abs_corr_selected`` / ``mean_abs_corr_top_mi`` (mean |rho| among the
selected neurons and among the k most informative ones, to show the decorrelation at work),
``param_compression`` (teacher parameters / student parameters).

Verdict history: The first published record (commit 4bf7cd9, 2026-11-25) said "not reproduced", with
budgets counted in epochs and the verdict decided by the mean alone. The verdict rules have changed since (CONTRIBUTING.md, "Verdict history"): a different verdict
comes from them, not from a change of the method.
"""

from __future__ import annotations

import torch
from pydantic import PositiveInt
from torch import nn

from atlas.harness import Profile, Run, TrainConfig, measure, reproduction
from atlas.harness.data import Split
from atlas.harness.models import MLP
from atlas.harness.teachers import MLP_TEACHER, MLPTeacherTraining, mlp_teacher
from atlas.harness.training import against_targets


class Config(Profile):
    teacher: MLPTeacherTraining  # the shared deep MLP teacher; its top hidden layer is selected from
    neurons: PositiveInt  # k, how many of the teacher's top-layer neurons are selected and regressed
    redundancy_weight: float  # lambda, the weight of the mean |correlation| with the selected neurons
    bins: PositiveInt  # quantile bins of a neuron's response for its mutual information with the class
    select_examples: PositiveInt  # training images the selection's statistics are computed on
    student_hidden: list[PositiveInt]  # the student MLP's hidden layers, before its one unit per selected neuron
    student: TrainConfig  # the neuron-regressing student's body, and the hard-label student alike
    classifier: TrainConfig  # the linear classifier fitted on the frozen student's features

PROFILES = {
    # Budgets in optimizer steps: the neuron-regressing student's body and the hard-label student
    # get the same ``student`` budget; the linear classifier on the frozen features its own.
    "smoke": {
        **MLP_TEACHER["smoke"], "seeds": 2,
        "neurons": 64, "redundancy_weight": 1.0, "bins": 8, "select_examples": 1000,
        "student_hidden": [128],
        "student": {"steps": 90, "batch_size": 64, "optimizer": "adam", "lr": 0.002},
        "classifier": {"steps": 168, "optimizer": "adam", "lr": 0.01, "batch_size": 256},
    },
    "quick": {
        # 1,500 steps of 128 = 3.2 passes over the 60,000 training images; classifier 1,172 steps of
        # 512. 3 seeds: two students of 1,500 steps per seed plus the shared teacher within the 90 s
        # budget (2,344 steps came to 107 s cold on 2 cores, 1,875 to 92 s).
        **MLP_TEACHER["quick"], "seeds": 3,
        "neurons": 300, "redundancy_weight": 1.0, "bins": 16, "select_examples": 10000,
        "student_hidden": [500],
        "student": {"steps": 1500, "batch_size": 128, "optimizer": "adam", "lr": 0.001},
        "classifier": {"steps": 1172, "optimizer": "adam", "lr": 0.01, "batch_size": 512},
    },
    "paper": {
        # The paper's own setting (DeepID2+ teachers on CelebFaces+, LFW verification) is outside the
        # harness; this is the same analogue on MNIST, trained longer (28,125 steps = 60 epochs).
        **MLP_TEACHER["paper"], "seeds": 3,
        "neurons": 300, "redundancy_weight": 1.0, "bins": 16, "select_examples": 20000,
        "student_hidden": [500],
        "student": {"steps": 28125, "batch_size": 128, "optimizer": "adam", "lr": 0.001},
        "classifier": {"steps": 2344, "optimizer": "adam", "lr": 0.01, "batch_size": 512},
    },
}


# ------------------------------------------------------------------------------ neuron selection
def top_hidden(teacher: nn.Sequential) -> nn.Sequential:
    """The teacher up to its top hidden layer (everything but the classifier)."""
    return nn.Sequential(*list(teacher)[:-1])


def mutual_information(responses: torch.Tensor, labels: torch.Tensor, num_classes: int, bins: int) -> torch.Tensor:
    """``I(a_i; y)`` in nats for every neuron (column of ``responses``), each response quantised
    into ``bins`` quantile bins (ties, e.g. the zeros of a ReLU, fall in one bin)."""
    n, d = responses.shape
    ranks = (torch.linspace(0, 1, bins + 1)[1:-1] * (n - 1)).long()
    edges = responses.sort(dim=0).values[ranks].T.contiguous()  # d x (bins-1): the quantile edges
    codes = torch.searchsorted(edges, responses.T.contiguous(), right=True)  # d x n, in 0..bins-1
    joint = torch.zeros(d, bins, num_classes)
    joint.view(d, -1).scatter_add_(1, codes * num_classes + labels.view(1, -1), torch.ones(d, n))
    joint /= n
    p_a = joint.sum(2, keepdim=True)
    p_y = joint.sum(1, keepdim=True)
    ratio = joint / (p_a * p_y).clamp_min(1e-12)
    return (joint * torch.log(ratio.clamp_min(1e-12))).sum((1, 2))


def select_neurons(responses: torch.Tensor, labels: torch.Tensor, num_classes: int, k: int,
                   redundancy_weight: float, bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy selection of ``k`` informative, decorrelated neurons; returns their indices (in order
    of selection) and every neuron's normalised informativeness."""
    mi = mutual_information(responses, labels, num_classes, bins)
    info = mi / mi.max().clamp_min(1e-12)
    corr = torch.corrcoef(responses.T).abs().nan_to_num(1.0)  # dead (constant) neurons: fully redundant
    selected: list[int] = [int(info.argmax())]
    redundancy = corr[selected[0]].clone()
    chosen = torch.zeros(len(info), dtype=torch.bool)
    chosen[selected[0]] = True
    for step in range(1, min(k, len(info))):
        score = info - redundancy_weight * redundancy / step
        score[chosen] = -float("inf")
        nxt = int(score.argmax())
        selected.append(nxt)
        chosen[nxt] = True
        redundancy += corr[nxt]
    return torch.tensor(selected), info


def mean_abs_corr(responses: torch.Tensor, idx: torch.Tensor) -> float:
    """Mean absolute correlation between distinct pairs of the neurons ``idx``."""
    c = torch.corrcoef(responses[:, idx].T).abs().nan_to_num(1.0)
    m = len(idx)
    return float((c.sum() - c.diagonal().sum()) / max(1, m * (m - 1)))


# ------------------------------------------------------------------------------------ students
class NeuronStudent(nn.Module):
    """An MLP whose output layer has one linear unit per selected teacher neuron (the student's
    representation, ``body``), followed by a linear ``classifier`` on that representation."""

    def __init__(self, run: Run, neurons: int) -> None:
        super().__init__()
        data = run.dataset()
        run.reseed("neuron student")  # both students start from the same weights, same data order
        self.body = MLP(data.input_shape, neurons, run.config["student_hidden"])
        self.classifier = nn.Linear(neurons, data.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(x))


def neuron_loss(student_neurons: torch.Tensor, teacher_neurons: torch.Tensor) -> torch.Tensor:
    """L2 regression of the selected neurons: ``1/2 * ||f(x) - h_S(x)||²`` averaged over the batch."""
    return 0.5 * (student_neurons - teacher_neurons).pow(2).sum(dim=1).mean()


def train_on_neurons(run: Run, targets: torch.Tensor) -> NeuronStudent:
    """Stage 1: the student's body regresses the selected neurons. Stage 2: a linear classifier is
    fitted on the (frozen) student's representation with the labels."""
    data = run.dataset()
    student = NeuronStudent(run, targets.shape[1]).to(run.device)
    loss = against_targets(targets.to(run.device), lambda out, target, y: neuron_loss(out, target))
    run.train(student.body, data.train, run.train_config("student"), desc="student (selected neurons)",
              loss_fn=loss)
    features = Split(run.predict(student.body, data.train), data.train.y)
    run.train(student.classifier, features, run.train_config("classifier"), desc="classifier on student features")
    return student.eval()


def train_on_labels(run: Run, neurons: int) -> NeuronStudent:
    """The same student (body and classifier) trained end to end on the hard labels."""
    student = NeuronStudent(run, neurons).to(run.device)
    return run.train(student, run.dataset().train, run.train_config("student"), desc="student (hard labels)")


@torch.no_grad()
def hidden_responses(run: Run, teacher: nn.Sequential, split: Split) -> torch.Tensor:
    """The teacher's top-hidden-layer responses on ``split`` (eval mode: dropout off)."""
    # the shared teacher's, computed once for every seed
    return run.shared_output(teacher, split, "top hidden layer", lambda: run.predict(top_hidden(teacher), split))


@reproduction("luo2016", profiles=PROFILES, config=Config)
def reproduce(run: Run) -> None:
    data = run.dataset()
    cfg = run.config
    teacher = mlp_teacher(run)
    responses = hidden_responses(run, teacher, data.train)
    sample = torch.randperm(len(data.train), generator=run.generator)[: cfg["select_examples"]]
    sample_resp = responses[sample]
    chosen, info = select_neurons(sample_resp, data.train.y[sample], data.num_classes, cfg["neurons"],
                                  cfg["redundancy_weight"], cfg["bins"])
    top_info = info.argsort(descending=True)[: len(chosen)]
    distilled = train_on_neurons(run, responses[:, chosen])
    del responses
    hard = train_on_labels(run, len(chosen))
    acc_teacher = run.accuracy(teacher, data.test)
    acc_hard = run.accuracy(hard, data.test)
    acc_distilled = run.accuracy(distilled, data.test)
    run.record(
        "lfw-student",
        model=f"MLP 1200-1200 teacher ({len(info)} top neurons) -> student MLP "
              f"{'-'.join(map(str, cfg['student_hidden']))}-{len(chosen)} regressing {len(chosen)} selected neurons",
        metrics={
            "baseline_accuracy": acc_teacher,
            "teacher_accuracy": acc_teacher,
            "student_accuracy": acc_hard,
            "accuracy": acc_distilled,
            "accuracy_change_pp": acc_distilled - acc_teacher,
            "student_minus_teacher_pp": acc_distilled - acc_teacher,
            "distillation_gain_pp": acc_distilled - acc_hard,
            "neurons_selected": len(chosen),
            "mean_abs_corr_selected": mean_abs_corr(sample_resp, chosen),
            "mean_abs_corr_top_mi": mean_abs_corr(sample_resp, top_info),
            "params": measure.count_params(distilled),
            "param_compression": measure.count_params(teacher) / measure.count_params(distilled),
        },
        # The claim's uncompressed model is the teacher (student minus teacher).
        baseline=("hinton-teacher", "teacher_accuracy"),
        baseline_spec={"dropout": cfg["teacher"].get("dropout", 0.0)},
        differs=f"classification analogue: classes as one-vs-rest attributes, accuracy instead of LFW verification; "
                f"deep MLP teacher, not DeepID2+; greedy selection (MI relevance minus mean |correlation|) "
                f"instead of the paper's mean-field optimisation; {cfg['student']['steps']} steps of batch "
                f"{cfg['student']['batch_size']} for each student",
    )
