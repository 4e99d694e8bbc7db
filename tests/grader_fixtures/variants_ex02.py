"""Other students' answers to exercise 2 (L1 norm + surgery); see variants.py for the idea.

``ex02-deepcopy-and-slicing`` is the answer that used to get 4 / 7: it draws no random numbers
(``copy.deepcopy`` instead of new layers), so the hidden test's random modules came out
different from the reference run's until the grader reseeded before every hidden block.
"""

from __future__ import annotations

from variants import Variant

EX02 = "ex02_l1_norm"

# copy.deepcopy + slicing into fresh Parameters; vector_norm; a Python sort for the mask
EX02_DEEPCOPY = {
    "l1_scores": """\
def l1_scores(conv):
    return torch.linalg.vector_norm(conv.weight.detach().flatten(1), ord=1, dim=1)""",
    "keep_mask": """\
def keep_mask(scores, sparsity):
    if scores.ndim != 1 or not (0 <= sparsity < 1):
        raise ValueError("bad input")
    n_cut = int(sparsity * len(scores))
    order = sorted(range(len(scores)), key=lambda i: (float(scores[i]), i))
    mask = torch.ones(len(scores), dtype=torch.bool)
    for i in order[:n_cut]:
        mask[i] = False
    return mask""",
    "prune_conv_bn_next": """\
def prune_conv_bn_next(conv, bn, nxt, keep):
    keep = torch.as_tensor(keep).long()
    n = conv.out_channels
    if keep.numel() == 0 or keep.unique().numel() != keep.numel() or keep.min() < 0 or keep.max() >= n:
        raise ValueError("bad keep")
    n_in = nxt.in_channels if isinstance(nxt, nn.Conv2d) else nxt.in_features
    if bn.num_features != n or n_in != n:
        raise ValueError("sizes do not match")
    if max(conv.groups, getattr(nxt, "groups", 1)) > 1:
        raise ValueError("grouped convolutions are not handled")
    c, b, f = copy.deepcopy(conv), copy.deepcopy(bn), copy.deepcopy(nxt)
    c.weight = nn.Parameter(conv.weight.detach()[keep].clone())
    if conv.bias is not None:
        c.bias = nn.Parameter(conv.bias.detach()[keep].clone())
    c.out_channels = len(keep)
    b.weight = nn.Parameter(bn.weight.detach()[keep].clone())
    b.bias = nn.Parameter(bn.bias.detach()[keep].clone())
    b.running_mean = bn.running_mean[keep].clone()
    b.running_var = bn.running_var[keep].clone()
    b.num_features = len(keep)
    f.weight = nn.Parameter(nxt.weight.detach()[:, keep].clone())
    if isinstance(f, nn.Conv2d):
        f.in_channels = len(keep)
    else:
        f.in_features = len(keep)
    return c, b, f""",
    "params_removed": """\
def params_removed(conv, bn, nxt, n_removed):
    per = conv.weight[0].numel() + (conv.bias is not None) + 2 * bn.affine + nxt.weight[:, 0].numel()
    return int(n_removed * per)""",
}

# index_select into new layers built from a state_dict; kthvalue-free mask via topk
EX02_STATE_DICT = {
    "keep_mask": """\
def keep_mask(scores, sparsity):
    if scores.dim() != 1:
        raise ValueError("1-D scores")
    if sparsity < 0 or sparsity >= 1:
        raise ValueError("sparsity in [0, 1)")
    k = int(sparsity * scores.numel())
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k:
        # stable ascending order, lower index first among ties
        keep[torch.sort(scores, stable=True).indices[:k]] = False
    return keep""",
    "prune_conv_bn_next": """\
def prune_conv_bn_next(conv, bn, nxt, keep):
    keep = torch.as_tensor(keep, dtype=torch.long).reshape(-1)
    valid = all(0 <= i < conv.out_channels for i in keep.tolist())
    if len(keep) == 0 or len(set(keep.tolist())) != len(keep) or not valid:
        raise ValueError("keep must be distinct, valid channel indices")
    width = nxt.weight.shape[1]
    if conv.groups != 1 or bn.num_features != conv.out_channels or width != conv.out_channels:
        raise ValueError("layers do not fit together")
    k = len(keep)
    sd = conv.state_dict()
    new_conv = nn.Conv2d(conv.in_channels, k, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                         bias="bias" in sd)
    new_conv.load_state_dict({name: t.index_select(0, keep) for name, t in sd.items()})
    new_bn = nn.BatchNorm2d(k, eps=bn.eps, momentum=bn.momentum)
    bsd = bn.state_dict()
    new_bn.load_state_dict({name: (t if t.dim() == 0 else t.index_select(0, keep)) for name, t in bsd.items()})
    nsd = nxt.state_dict()
    if isinstance(nxt, nn.Linear):
        new_next = nn.Linear(k, nxt.out_features, bias="bias" in nsd)
    else:
        new_next = nn.Conv2d(k, nxt.out_channels, nxt.kernel_size, nxt.stride, nxt.padding, nxt.dilation,
                             bias="bias" in nsd)
    nsd["weight"] = nsd["weight"].index_select(1, keep)
    new_next.load_state_dict(nsd)
    for new, old in ((new_conv, conv), (new_bn, bn), (new_next, nxt)):
        new.train(old.training)
    return new_conv, new_bn, new_next""",
}

# running statistics not copied (fresh BN), scores that keep the autograd graph; asserts stripped
EX02_STATS_AND_GRAD = {
    "l1_scores": """\
def l1_scores(conv):
    return conv.weight.abs().sum(dim=(1, 2, 3))""",
    "prune_conv_bn_next": """\
def prune_conv_bn_next(conv, bn, nxt, keep):
    keep = torch.as_tensor(keep, dtype=torch.long)
    if keep.numel() == 0 or keep.unique().numel() != keep.numel() or keep.min() < 0 or keep.max() >= conv.out_channels:
        raise ValueError("bad keep")
    if bn.num_features != conv.out_channels:
        raise ValueError("bad bn")
    c = nn.Conv2d(conv.in_channels, len(keep), conv.kernel_size, conv.stride, conv.padding, bias=conv.bias is not None)
    b = nn.BatchNorm2d(len(keep)).eval()
    n = nn.Linear(len(keep), nxt.out_features) if isinstance(nxt, nn.Linear) else \\
        nn.Conv2d(len(keep), nxt.out_channels, nxt.kernel_size, nxt.stride, nxt.padding)
    with torch.no_grad():
        c.weight.copy_(conv.weight[keep])
        if conv.bias is not None:
            c.bias.copy_(conv.bias[keep])
        b.weight.copy_(bn.weight[keep])
        b.bias.copy_(bn.bias[keep])
        n.weight.copy_(nxt.weight[:, keep])
        n.bias.copy_(nxt.bias)
    return c, b, n""",
}

# the deep-copy surgery without its check for grouped convolutions: a grouped conv is cut as if plain
EX02_GROUPS_UNCHECKED = {"prune_conv_bn_next": EX02_DEEPCOPY["prune_conv_bn_next"].replace(
    '    if max(conv.groups, getattr(nxt, "groups", 1)) > 1:\n'
    '        raise ValueError("grouped convolutions are not handled")\n', "")}

VARIANTS_EX02 = {
    "ex02-groups-unchecked": Variant(EX02, EX02_GROUPS_UNCHECKED, lost=("test_prune_conv_bn_next",),
                                     strip_asserts=True, why="grouped convolutions not refused (hidden)"),
    "ex02-deepcopy-and-slicing": Variant(EX02, EX02_DEEPCOPY, why="deepcopy + slicing: draws no random numbers"),
    "ex02-state-dict-index-select": Variant(EX02, EX02_STATE_DICT, why="load_state_dict + index_select, torch.sort"),
    "ex02-stats-lost-grad-kept": Variant(EX02, EX02_STATS_AND_GRAD, lost=("test_l1_scores", "test_prune_conv_bn_next"),
                                         strip_asserts=True,
                                         why="requires_grad scores (only recorded), BN running stats not copied"),
}
