"""DarkRank's transfer losses and the retrieval metrics (chen2018)."""

import itertools
import math

import torch
from atlas_reproductions import chen2018
from atlas_reproductions.chen2018 import hard_rank_loss, retrieval, similarity_scores, soft_transfer_loss


def test_hard_rank_loss_is_plackett_luce_nll_of_teacher_order() -> None:
    torch.manual_seed(0)
    student, teacher = torch.randn(4, 3), torch.randn(4, 3)
    s_s, s_t = similarity_scores(student, 3.0, 3.0), similarity_scores(teacher, 3.0, 3.0)
    total = 0.0
    for q in range(4):
        others = [i for i in range(4) if i != q]
        order = sorted(others, key=lambda i: -s_t[q, i].item())
        s = [s_s[q, i].item() for i in order]
        total += sum(math.log(sum(math.exp(v) for v in s[k:])) - s[k] for k in range(len(s))) / len(s)
    assert torch.isclose(hard_rank_loss(student, teacher, 3.0, 3.0), torch.tensor(total / 4), atol=1e-5)


def test_soft_transfer_vanishes_when_student_ranks_like_teacher() -> None:
    emb = torch.randn(8, 5)
    assert soft_transfer_loss(emb, emb, 3.0, 3.0, 4).abs() < 1e-6
    assert soft_transfer_loss(torch.randn(8, 5), emb, 3.0, 3.0, 4) > 0


def test_retrieval_perfect_and_chance() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    emb = torch.tensor([[0.0], [0.1], [5.0], [5.1]])
    assert retrieval(emb, labels) == (100.0, 100.0)
    r1, _ = retrieval(torch.tensor([[0.0], [5.0], [0.1], [5.1]]), labels)
    assert r1 == 0.0


def _brute_force_kl(student: torch.Tensor, teacher: torch.Tensor, length: int) -> float:
    """KL(P_teacher || P_student) over every permutation of each query's teacher top-``length`` list,
    written out term by term from the paper's Plackett-Luce definition."""
    s_s, s_t = similarity_scores(student, 3.0, 3.0), similarity_scores(teacher, 3.0, 3.0)
    n, total = len(student), 0.0

    def prob(scores: list[float], perm: tuple[int, ...]) -> float:
        p = 1.0
        for k in range(len(perm)):
            p *= math.exp(scores[perm[k]]) / sum(math.exp(scores[m]) for m in perm[k:])
        return p

    for q in range(n):
        cand = sorted((i for i in range(n) if i != q), key=lambda i: -s_t[q, i].item())[:length]
        st, ss = [s_t[q, i].item() for i in cand], [s_s[q, i].item() for i in cand]
        for perm in itertools.permutations(range(length)):
            pt, ps = prob(st, perm), prob(ss, perm)
            total += pt * math.log(pt / ps)
    return total / n


def test_soft_transfer_is_kl_over_permutations_of_teachers_top_list() -> None:
    torch.manual_seed(1)
    student, teacher = torch.randn(7, 4), torch.randn(7, 4)
    got = soft_transfer_loss(student, teacher, 3.0, 3.0, 3)
    assert math.isclose(got.item(), _brute_force_kl(student, teacher, 3), rel_tol=1e-4, abs_tol=1e-6)


def test_soft_transfer_gradient_is_finite_and_only_reaches_the_student() -> None:
    teacher = torch.randn(6, 4, requires_grad=True)
    student = torch.ones(6, 4).requires_grad_()  # every distance 0: d**beta at d = 0
    soft_transfer_loss(student, teacher, 3.0, 3.0, 4).backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()
    assert teacher.grad is None


def test_transfer_weight_is_chosen_on_training_data_only() -> None:
    """The weight is picked on a validation slice of the training set; the test set is never read."""
    from atlas.harness.data import Dataset, Split
    from atlas.harness.run import Run

    torch.manual_seed(0)
    train = Split(torch.randn(96, 1, 2, 2), torch.randint(0, 3, (96,)))
    test = Split(torch.full((8, 1, 2, 2), float("nan")), torch.zeros(8, dtype=torch.int64))
    student = {"steps": 3, "batch_size": 32, "lr": 0.05, "optimizer": "sgd", "hidden": [8], "embed": 4}
    cfg = dict(chen2018.PROFILES["smoke"], transfer_weights=[0.1, 1.0], val_size=32, student=student)
    run = Run("chen2018", "smoke", chen2018.Config.model_validate(cfg).model_dump(mode="json"), 0, progress=False)
    run.dataset = lambda name=None: Dataset("toy", train, test, 3, "test")  # type: ignore[method-assign]
    weight, scores = chen2018.choose_transfer_weight(run, torch.randn(96, 4), "soft")
    assert weight in (0.1, 1.0) and set(scores) == {0.1, 1.0}
    assert all(math.isfinite(r) for r in scores.values())


def test_evaluation_scores_the_l2_normalised_embedding() -> None:
    """Retrieval is scored on the unit-length embeddings the losses shape (the released code's
    l2_norm_output), not on the raw f(x): here the raw nearest neighbour of each point is of the
    other class, the angular one of its own."""
    from types import SimpleNamespace

    from atlas.harness.data import Split

    emb = torch.tensor([[1.0, 0.0], [10.0, 0.0], [1.0, 0.6], [10.0, 6.0]])
    labels = torch.tensor([0, 0, 1, 1])
    assert retrieval(emb, labels)[0] == 0.0
    run = SimpleNamespace(predict=lambda model, split: emb)
    assert chen2018.evaluate(run, None, Split(torch.zeros(4, 1), labels)) == (100.0, 100.0)  # type: ignore[arg-type]
