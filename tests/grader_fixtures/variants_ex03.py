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

VARIANTS_EX03 = {
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
