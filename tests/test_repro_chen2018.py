"""DarkRank's transfer losses and the retrieval metrics (chen2018)."""

import math

import torch

from reproductions.chen2018 import hard_rank_loss, retrieval, similarity_scores, soft_transfer_loss


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
