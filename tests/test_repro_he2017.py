"""Channel pruning: the channels' contributions, the LASSO selection, the least-squares reconstruction."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from atlas_reproductions.he2017 import (
    _advance,
    _samples,
    channel_prune,
    contributions,
    conv_layers,
    reconstruct,
    select_channels,
)

from atlas.harness import models


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    model = models.build("vgg-small", (1, 8, 8), 10, width=0.125)
    with torch.no_grad():
        model.train()
        for _ in range(3):
            model(torch.randn(64, 1, 8, 8))
    return model.eval()


def test_the_channels_contributions_add_up_to_the_layers_output() -> None:
    x, w = torch.randn(20, 5, 9), torch.randn(7, 5, 9)
    z = contributions(x, w)  # (20 * 7, 5)
    torch.testing.assert_close(z.sum(1).reshape(20, 7), x.reshape(20, -1) @ w.reshape(7, -1).T)


def test_the_sampled_patches_and_outputs_are_the_convolutions() -> None:
    model = _net()
    conv = conv_layers(model)[1][0]
    images = torch.randn(6, 1, 8, 8)
    h = _advance(model, 0, images)  # the input of conv 1
    x, y = _samples(conv, h, 5, torch.Generator().manual_seed(0))
    assert x.shape == (30, conv.in_channels, 9) and y.shape == (30, conv.out_channels)
    seen = {}
    hook = conv.register_forward_hook(lambda m, i, o: seen.update(out=o.detach(), inp=i[0].detach()))
    with torch.no_grad():
        model(images)
    hook.remove()
    torch.testing.assert_close(h, seen["inp"])
    outputs = seen["out"].flatten(2).permute(0, 2, 1).reshape(-1, conv.out_channels)  # every position
    # every sampled output is one of the convolution's outputs of its image
    for s in range(30):
        image = outputs[(s // 5) * 64:(s // 5 + 1) * 64]
        assert torch.isclose(image, y[s], atol=1e-4).all(1).any()


def test_lasso_selects_the_channels_that_explain_the_output() -> None:
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(400, 6, 9, generator=gen), torch.randn(4, 6, 9, generator=gen)
    y = x[:, [1, 4]].reshape(400, -1) @ w[:, [1, 4]].reshape(4, -1).T  # only channels 1 and 4 matter
    assert select_channels(x, w, y, 2).tolist() == [1, 4]
    assert set(select_channels(x, w, y, 3).tolist()) >= {1, 4}


def test_least_squares_recovers_the_weights_that_produced_the_output() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(500, 6, 9, generator=gen)
    w_true = torch.randn(4, 3, 9, generator=gen)
    kept = torch.tensor([0, 2, 5])
    y = x[:, kept].reshape(500, -1) @ w_true.reshape(4, -1).T
    torch.testing.assert_close(reconstruct(x, y, kept, ridge=0.0), w_true, rtol=1e-4, atol=1e-4)


def test_pruning_builds_the_narrower_network_and_reconstruction_helps() -> None:
    model = _net()
    images = torch.randn(200, 1, 8, 8)
    pruned = channel_prune(model, images, 0.5, 4, seed=0)
    assert [c.weight.shape[0] for c, _ in conv_layers(pruned)] == [4, 4, 8, 8, 16, 16]
    assert [c.weight.shape[1] for c, _ in conv_layers(pruned)] == [1, 4, 4, 8, 8, 16]
    assert pruned.classifier[-1].weight.shape == (10, 16)
    plain = channel_prune(model, images, 0.5, 4, seed=0, reconstruction=False)
    x = torch.randn(100, 1, 8, 8)
    with torch.no_grad():
        ref = model(x)
        err_rec = F.mse_loss(pruned(x), ref)
        err_plain = F.mse_loss(plain(x), ref)
    assert err_rec < err_plain
