"""Facts that several lectures build on, checked once where every lecture can rely on them.

Two lectures once taught opposite things about the same checkpoint (one said slimming trains the
γ's of every layer "towards one scale", another measured that they are not). A lecture's own
claims check its own prose; the facts below are the ones the course's argument rests on, so they
are pinned here, against the shipped checkpoints and exact arithmetic, independent of any
notebook's wording:

* lecture 03: after slimming, the switched-on γ's of different layers sit on *different* scales
  (their medians differ by almost ten times); a global |γ| threshold works because of the *gap*
  between them and the switched-off pile, which the global 50% and 70% cuts never leave;
* lecture 04 (and exercise 04): with BatchNorm in train mode the weight-form Taylor sum of a
  filter is exactly ``eps / (var + eps) * gamma * dL/dgamma`` -- a shrunk γ-Taylor term, not a
  numerical residue.
"""

from __future__ import annotations

import torch
from torch import nn

from prunekit.viz import bn_gammas
from prunekit.zoo import load_pretrained

SWITCHED_ON = 0.01   # lecture 03's threshold between "switched on" and the near-zero pile
PILE = 1e-5          # "practically zero"


def test_slimmed_gammas_sit_on_different_scales_and_the_global_cut_stays_in_the_gap():
    per_layer = bn_gammas(load_pretrained("vgg_small_slim"))
    medians = [g[g >= SWITCHED_ON].median().item() for g in per_layer.values()]
    assert max(medians) / min(medians) > 5, f"switched-on medians {medians}: one scale after all?"
    everything = torch.cat(list(per_layer.values())).sort().values
    for ratio in (0.5, 0.7):
        largest_cut = everything[int(ratio * everything.numel()) - 1].item()
        assert largest_cut < PILE, f"a global {ratio:.0%} cut reaches |gamma| = {largest_cut:.1e}, out of the pile"


def _conv_bn_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 5)).double()


def test_train_mode_weight_taylor_is_a_shrunk_gamma_taylor():
    net = _conv_bn_net().train()
    conv, bn = net[0], net[1]
    with torch.no_grad():   # a non-trivial BN: gammas and betas away from their initial 1 and 0
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.uniform_(-0.5, 0.5)
    x, y = torch.randn(16, 3, 6, 6, dtype=torch.float64), torch.randint(0, 5, (16,))
    seen = {}

    def batch_variance(module, inputs, output) -> None:   # returns None: the output stays as it is
        seen["var"] = inputs[0].var(dim=(0, 2, 3), unbiased=False)

    bn.register_forward_hook(batch_variance)
    nn.functional.cross_entropy(net(x), y).backward()
    weight_form = (conv.weight * conv.weight.grad).sum(dim=(1, 2, 3))
    shrunk_gamma = bn.eps / (seen["var"] + bn.eps) * bn.weight * bn.weight.grad
    assert torch.allclose(weight_form, shrunk_gamma, rtol=1e-8, atol=1e-20)
    assert shrunk_gamma.abs().max() > 0, "the identity must not hold trivially (all zeros)"
    # eval mode breaks the invariance: there the weight form is of the size of the gate form
    net.eval()
    net.zero_grad()
    nn.functional.cross_entropy(net(x), y).backward()
    eval_form = (conv.weight * conv.weight.grad).sum(dim=(1, 2, 3))
    assert eval_form.abs().max() > 1e3 * weight_form.abs().max()
