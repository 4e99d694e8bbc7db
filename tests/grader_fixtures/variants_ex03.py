"""Other students' answers to exercise 3 (network slimming); see variants.py for the idea."""

from __future__ import annotations

from variants import Variant, stealing

EX03 = "ex03_bn_slimming"

# sum() over a generator, a global sort with Python tuples, deepcopy + slicing into the blocks
EX03_PYTHONIC = {
    "bn_l1_penalty": """\
def bn_l1_penalty(model, lam):
    gammas = [m.weight for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d))
              and m.weight is not None]
    return lam * sum((g.abs().sum() for g in gammas), torch.zeros(()))""",
    "capped_global_keep": """\
def capped_global_keep(gammas, ratio, max_ratio=0.9, min_keep=1):
    if not (0 <= ratio < 1) or not (0 <= max_ratio <= 1) or min_keep < 0:
        raise ValueError("bad arguments")
    sizes = [len(g.flatten()) for g in gammas]
    floors = [min(n, max(min_keep, math.ceil(round(n - max_ratio * n, 6)))) for n in sizes]
    entries = sorted((abs(float(v)), layer, i)
                     for layer, g in enumerate(gammas) for i, v in enumerate(g.flatten().tolist()))
    keep = [torch.ones(n, dtype=torch.bool) for n in sizes]
    budget = int(ratio * sum(sizes))
    for _, layer, i in entries:
        if budget == 0:
            break
        if int(keep[layer].sum()) > floors[layer]:
            keep[layer][i] = False
            budget -= 1
    return keep""",
    "slim_vgg": """\
def slim_vgg(model, masks):
    blocks = [m for m in model.features if isinstance(m, nn.Sequential)]
    if len(masks) != len(blocks) or any(len(k) != b[0].out_channels or not k.any() for k, b in zip(masks, blocks)):
        raise ValueError("one non-empty mask per block, of the block's width")
    new = copy.deepcopy(model)
    prev = None
    for block, mask in zip((m for m in new.features if isinstance(m, nn.Sequential)), masks):
        idx = torch.nonzero(mask).squeeze(1)
        conv, bn = block[0], block[1]
        w = conv.weight.detach()[idx]
        conv.weight = nn.Parameter((w if prev is None else w[:, prev]).clone())
        if conv.bias is not None:
            conv.bias = nn.Parameter(conv.bias.detach()[idx].clone())
        conv.out_channels, conv.in_channels = len(idx), conv.weight.shape[1]
        bn.weight = nn.Parameter(bn.weight.detach()[idx].clone())
        bn.bias = nn.Parameter(bn.bias.detach()[idx].clone())
        bn.running_mean, bn.running_var = bn.running_mean[idx].clone(), bn.running_var[idx].clone()
        bn.num_features = len(idx)
        prev = idx
    new.classifier.weight = nn.Parameter(new.classifier.weight.detach()[:, prev].clone())
    new.classifier.in_features = len(prev)
    return new""",
}

# gamma detached (no gradient reaches it) and masks of the wrong length accepted; asserts stripped
EX03_DETACHED = {
    "bn_l1_penalty": """\
def bn_l1_penalty(model, lam):
    total = torch.tensor(0.0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            total = total + m.weight.detach().abs().sum()
    return lam * total""",
    "slim_vgg": """\
def slim_vgg(model, masks):
    new = copy.deepcopy(model)
    prev = None
    for block, mask in zip((m for m in new.features if isinstance(m, nn.Sequential)), masks):
        keep = mask.nonzero().flatten()
        conv, bn = block[0], block[1]
        w = conv.weight.detach()[keep]
        w = w if prev is None else w[:, prev]
        new_conv = nn.Conv2d(w.shape[1], w.shape[0], conv.kernel_size, conv.stride, conv.padding,
                             bias=conv.bias is not None)
        new_bn = nn.BatchNorm2d(len(keep))
        with torch.no_grad():
            new_conv.weight.copy_(w)
            if conv.bias is not None:
                new_conv.bias.copy_(conv.bias[keep])
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(new_bn, name).copy_(getattr(bn, name)[keep])
        block[0], block[1] = new_conv, new_bn
        prev = keep
    fc = nn.Linear(len(prev), new.classifier.out_features)
    with torch.no_grad():
        fc.weight.copy_(new.classifier.weight[:, prev])
        fc.bias.copy_(new.classifier.bias)
    new.classifier = fc
    return new.train(model.training)""",
}

# task 2 derives each layer's floor (the formula is not given): two other correct derivations ...
# (a) "may lose" counted down, Python loops over a sorted list of (|gamma|, layer, index)
EX03_FLOOR_BY_LOSSES = {
    "capped_global_keep": """\
def capped_global_keep(gammas, ratio, max_ratio=0.9, min_keep=1):
    if not 0 <= ratio < 1 or not 0 <= max_ratio <= 1 or min_keep < 0:
        raise ValueError("bad ratio, max_ratio or min_keep")
    may_lose = []
    for g in gammas:
        n = g.numel()
        by_cap = math.floor(round(max_ratio * n, 6))       # at most max_ratio of n, rounded down
        by_min = max(n - min_keep, 0)                     # keep min_keep (a small layer loses none)
        may_lose.append(min(by_cap, by_min))
    order = sorted(((abs(v), layer, i) for layer, g in enumerate(gammas) for i, v in enumerate(g.tolist())),
                   key=lambda e: e[0])                   # sorted() is stable: ties keep layer, index order
    keep = [torch.ones(g.numel(), dtype=torch.bool) for g in gammas]
    left = int(ratio * sum(g.numel() for g in gammas))
    for _, layer, i in order:
        if left == 0:
            break
        if may_lose[layer] > 0:
            keep[layer][i] = False
            may_lose[layer] -= 1
            left -= 1
    return keep""",
}

# (b) exact decimal arithmetic (Fraction of the printed value) instead of rounding; masks built vectorised
EX03_FLOOR_BY_FRACTION = {
    "capped_global_keep": """\
from fractions import Fraction


def capped_global_keep(gammas, ratio, max_ratio=0.9, min_keep=1):
    if ratio < 0 or ratio >= 1 or max_ratio < 0 or max_ratio > 1 or min_keep < 0:
        raise ValueError("out of range")
    sizes = [g.numel() for g in gammas]
    kept_at_least = [n if n <= min_keep else max(min_keep, math.ceil((1 - Fraction(str(max_ratio))) * n))
                     for n in sizes]
    flat = torch.cat([g.flatten().abs() for g in gammas])
    owner = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    removed = torch.zeros(flat.numel(), dtype=torch.bool)
    budget = [n - f for n, f in zip(sizes, kept_at_least)]
    k = int(ratio * flat.numel())
    for j in torch.sort(flat, stable=True).indices.tolist():
        if k == 0:
            break
        if budget[owner[j]] > 0:
            removed[j] = True
            budget[owner[j]] -= 1
            k -= 1
    return [~m for m in removed.split(sizes)]""",
}

# ... and two wrong ones: no float guard (0.57 * 100 = 56.99999999999999 -> may lose only 56), and the
# number a layer may lose rounded up (a layer of 10 at 0.75 loses 8)
EX03_NO_FLOAT_GUARD = {
    "capped_global_keep": """\
def capped_global_keep(gammas, ratio, max_ratio=0.9, min_keep=1):
    if not (0 <= ratio < 1 and 0 <= max_ratio <= 1 and min_keep >= 0):
        raise ValueError("bad arguments")
    sizes = [g.numel() for g in gammas]
    floors = [min(n, max(min_keep, n - math.floor(max_ratio * n))) for n in sizes]
    order = torch.argsort(torch.cat([g.abs().flatten() for g in gammas]), stable=True).tolist()
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    keep = [torch.ones(n, dtype=torch.bool) for n in sizes]
    left, k = list(sizes), int(ratio * sum(sizes))
    for j in order:
        if k == 0:
            break
        layer = max(i for i, s in enumerate(starts) if s <= j)
        if left[layer] > floors[layer]:
            keep[layer][j - starts[layer]] = False
            left[layer] -= 1
            k -= 1
    return keep""",
}
EX03_CAP_ROUNDED_UP = {
    "capped_global_keep": EX03_NO_FLOAT_GUARD["capped_global_keep"].replace(
        "n - math.floor(max_ratio * n)", "n - math.ceil(round(max_ratio * n, 6))"),
}

# a penalty that knows only BatchNorm1d and 2d, and a slim VGG always returned in eval mode
EX03_NO_BN3D = {
    "bn_l1_penalty": """\
def bn_l1_penalty(model, lam):
    total = torch.tensor(0.0)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.affine:
            total = total + m.weight.abs().sum()
    return lam * total""",
}
EX03_ALWAYS_EVAL = {
    "slim_vgg": """\
def slim_vgg(model, masks):
    blocks = [m for m in model.features if isinstance(m, nn.Sequential)]
    if len(masks) != len(blocks) or any(m.numel() != b[0].out_channels or not m.any() for m, b in zip(masks, blocks)):
        raise ValueError("one non-empty mask per block, of the block's width")
    new = copy.deepcopy(model).eval()
    prev = None
    for block, mask in zip((m for m in new.features if isinstance(m, nn.Sequential)), masks):
        idx = mask.nonzero().flatten()
        conv, bn = block[0], block[1]
        w = conv.weight.detach()[idx]
        conv.weight = nn.Parameter((w if prev is None else w[:, prev]).clone())
        conv.out_channels, conv.in_channels = len(idx), conv.weight.shape[1]
        for name in ("weight", "bias"):
            setattr(bn, name, nn.Parameter(getattr(bn, name).detach()[idx].clone()))
        bn.running_mean, bn.running_var = bn.running_mean[idx].clone(), bn.running_var[idx].clone()
        bn.num_features = len(idx)
        prev = idx
    new.classifier.weight = nn.Parameter(new.classifier.weight.detach()[:, prev].clone())
    new.classifier.in_features = len(prev)
    return new""",
}

VARIANTS_EX03 = {
    "ex03-no-batchnorm3d": Variant(EX03, EX03_NO_BN3D, lost=("test_bn_l1_penalty",),
                                   why="BatchNorm3d's gamma left out of the penalty (hidden)"),
    "ex03-slim-always-eval": Variant(EX03, EX03_ALWAYS_EVAL, lost=("test_slim_vgg",),
                                     why="the new model is always in eval mode (hidden: a model in train mode)"),
    "ex03-floor-by-losses-loops": Variant(EX03, EX03_FLOOR_BY_LOSSES,
                                          why="floor derived as 'may lose' = min(floor(max_ratio n), n - min_keep)"),
    "ex03-floor-by-fraction": Variant(EX03, EX03_FLOOR_BY_FRACTION,
                                      why="floor derived with exact decimal Fractions, masks split from one tensor"),
    "ex03-floor-without-float-guard": Variant(EX03, EX03_NO_FLOAT_GUARD, lost=("test_capped_global_keep",),
                                              why="0.57 * 100 taken as 56.99...: one channel fewer may go (hidden)"),
    "ex03-floor-cap-rounded-up": Variant(EX03, EX03_CAP_ROUNDED_UP, lost=("test_capped_global_keep",),
                                         why="the number a layer may lose rounded up: more than max_ratio goes"),
    "ex03-pythonic-deepcopy": Variant(EX03, EX03_PYTHONIC, why="generator sum, tuple sort, deepcopy + slicing"),
    "ex03-detached-gamma-no-mask-checks": Variant(
        EX03, EX03_DETACHED, lost=("test_bn_l1_penalty", "test_slim_vgg"), strip_asserts=True,
        why="no gradient reaches gamma; wrong mask counts are not refused (both only recorded once asserts go)"),
    "ex03-steals-the-reference": Variant(EX03, stealing({"capped_global_keep": """\
def capped_global_keep(gammas, ratio, max_ratio=0.9, min_keep=1):
    if not (0 <= ratio < 1 and 0 <= max_ratio <= 1 and min_keep >= 0):
        raise ValueError("ratio, max_ratio or min_keep out of range")
    return [torch.tensor(keep, dtype=torch.bool) for keep in _steal("_ref")(gammas, ratio, max_ratio, min_keep)]"""}),
        lost=("test_capped_global_keep",), why="runs the hidden test's own reference (line cache of the running cell)"),
}
