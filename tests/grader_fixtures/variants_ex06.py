"""Other students' answers to exercise 6 (prune, recalibrate, evaluate); see variants.py for the idea."""

from __future__ import annotations

from variants import Variant, stealing

EX06 = "ex06_pipeline"

# a copy for evaluation, a momentum of 1/(i+1) as the running average, set-based selection, sorted() ratios
EX06_BY_HAND = {
    "accuracy": """\
def accuracy(model, loader):
    twin = copy.deepcopy(model).eval()
    hits, seen = 0, 0
    with torch.no_grad():
        for x, y in loader:
            hits += (twin(x).argmax(-1) == y).sum().item()
            seen += y.numel()
    if seen == 0:
        raise ValueError("no data")
    return hits / seen""",
    "recalibrate_bn": """\
def recalibrate_bn(model, loader, batches=10):
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [bn.momentum for bn in bns]
    model.eval()
    for bn in bns:
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0)
        bn.num_batches_tracked.zero_()
        bn.train()
    with torch.no_grad():
        for i, (x, _) in zip(range(batches), loader):
            for bn in bns:
                bn.momentum = 1.0 / (i + 1)  # a running average over the batches seen so far
            model(x)
    for bn, momentum in zip(bns, momenta):
        bn.momentum = momentum
    return model.eval()""",
    "prune_vgg_uniform": """\
def prune_vgg_uniform(model, ratio):
    if ratio < 0 or ratio >= 1:
        raise ValueError("ratio must be in [0, 1)")
    new = copy.deepcopy(model)
    prev = None
    for block in [m for m in new.features if isinstance(m, nn.Sequential)]:
        conv, bn = block[0], block[1]
        n = conv.out_channels
        scores = conv.weight.detach().abs().flatten(1).sum(1)
        drop = set(torch.argsort(scores, stable=True)[: int(ratio * n)].tolist())
        keep = torch.tensor([i for i in range(n) if i not in drop])
        w = conv.weight.detach()[keep]
        conv.weight = nn.Parameter((w if prev is None else w[:, prev]).clone())
        if conv.bias is not None:
            conv.bias = nn.Parameter(conv.bias.detach()[keep].clone())
        conv.out_channels, conv.in_channels = len(keep), conv.weight.shape[1]
        bn.weight = nn.Parameter(bn.weight.detach()[keep].clone())
        bn.bias = nn.Parameter(bn.bias.detach()[keep].clone())
        bn.running_mean, bn.running_var = bn.running_mean[keep].clone(), bn.running_var[keep].clone()
        bn.num_features = len(keep)
        prev = keep
    new.classifier.weight = nn.Parameter(new.classifier.weight.detach()[:, prev].clone())
    new.classifier.in_features = len(prev)
    return new""",
    "choose_ratio": """\
def choose_ratio(results, baseline, budget):
    best = None
    for ratio in sorted(results):
        if baseline - results[ratio] <= budget + 1e-9:
            best = ratio
    return best""",
}

# accuracy in train mode on a copy (batch statistics), BN momentum never restored; asserts stripped
EX06_MODES = {
    "accuracy": """\
def accuracy(model, loader):
    twin = copy.deepcopy(model)
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += int((twin(x).argmax(1) == y).sum())
            total += len(y)
    if not total:
        raise ValueError("empty loader")
    return correct / total""",
    "recalibrate_bn": """\
def recalibrate_bn(model, loader, batches=10):
    model.eval()
    for bn in model.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
    with torch.no_grad():
        for i, (x, _) in enumerate(loader):
            if i >= batches:
                break
            model(x)
    return model.eval()""",
}

# task 4 is a prediction (the MACs left after uniform pruning), graded against count_macs within 0.02:
# two other correct ones -- the (1 - r)^2 rule of thumb, and the per-layer arithmetic as a function --
EX06_MACS_RULE = {
    "predicted_macs": """\
# both widths of every inner conv shrink by (1 - r)
predicted_macs = {r: (1 - r) ** 2 for r in (0.25, 0.5, 0.75)}""",
}
EX06_MACS_COUNTED = {
    "predicted_macs": """\
def vgg_macs(widths, size=8, image_channels=1, classes=10):
    sides = [size, size, size // 2, size // 4]          # max-pools after the 2nd and 3rd block
    ins = [image_channels, *widths[:-1]]
    return sum(9 * c_in * c_out * s * s for c_in, c_out, s in zip(ins, widths, sides)) + widths[-1] * classes


dense = vgg_macs((16, 32, 64, 64))
predicted_macs = {}
for r in (0.25, 0.5, 0.75):
    predicted_macs[r] = vgg_macs([n - int(r * n) for n in (16, 32, 64, 64)]) / dense""",
}
# ... and two wrong ones: MACs taken to fall like the channels (1 - r), and like their cube
EX06_MACS_LINEAR = {"predicted_macs": "predicted_macs = {0.25: 0.75, 0.5: 0.5, 0.75: 0.25}"}
EX06_MACS_CUBE = {"predicted_macs": "predicted_macs = {r: (1 - r) ** 3 for r in (0.25, 0.5, 0.75)}"}

# task 3, three ways to lose it that the zero-mask check alone cannot see: kept channels in score order
# (a permutation computes the same function), ties broken towards the higher index, and the mode lost
EX06_UNIFORM_SOLUTION = """\
def prune_vgg_uniform(model, ratio):
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio must be in [0, 1), got {ratio}")
    new = copy.deepcopy(model)
    prev = None
    for block in (m for m in new.features if isinstance(m, nn.Sequential)):
        conv, bn = block[0], block[1]
        scores = conv.weight.detach().abs().sum(dim=(1, 2, 3))
        n_cut = int(ratio * conv.out_channels)
        keep = torch.argsort(scores, stable=True)[n_cut:].sort().values
        weight = conv.weight.detach()[keep]
        if prev is not None:
            weight = weight[:, prev]
        new_conv = nn.Conv2d(weight.shape[1], weight.shape[0], conv.kernel_size, conv.stride, conv.padding,
                             bias=conv.bias is not None)
        new_bn = nn.BatchNorm2d(len(keep), eps=bn.eps, momentum=bn.momentum)
        with torch.no_grad():
            new_conv.weight.copy_(weight)
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(new_bn, name).copy_(getattr(bn, name)[keep])
        block[0], block[1] = new_conv, new_bn
        prev = keep
    fc = new.classifier
    new.classifier = nn.Linear(len(prev), fc.out_features)
    with torch.no_grad():
        new.classifier.weight.copy_(fc.weight[:, prev])
        new.classifier.bias.copy_(fc.bias)
    return new.train(model.training)"""
EX06_SCORE_ORDER = {"prune_vgg_uniform": EX06_UNIFORM_SOLUTION.replace(
    "keep = torch.argsort(scores, stable=True)[n_cut:].sort().values",
    "keep = torch.argsort(scores, stable=True)[n_cut:]              # weakest kept channel first")}
EX06_TIES_HIGH = {"prune_vgg_uniform": EX06_UNIFORM_SOLUTION.replace(
    "keep = torch.argsort(scores, stable=True)[n_cut:].sort().values",
    "keep = torch.argsort(scores, descending=True, stable=True)[:conv.out_channels - n_cut].sort().values")}
EX06_MODE_LOST = {"prune_vgg_uniform": EX06_UNIFORM_SOLUTION.replace("return new.train(model.training)",
                                                                     "return new.eval()")}

VARIANTS_EX06 = {
    "ex06-uniform-score-order": Variant(EX06, EX06_SCORE_ORDER, lost=("test_prune_vgg_uniform",),
                                        why="kept channels in score order, not index order (hidden)"),
    "ex06-uniform-ties-high": Variant(EX06, EX06_TIES_HIGH, lost=("test_prune_vgg_uniform",),
                                      why="ties: the higher index removed first (hidden)"),
    "ex06-uniform-mode-lost": Variant(EX06, EX06_MODE_LOST, lost=("test_prune_vgg_uniform",), strip_asserts=True,
                                      why="always eval mode (hidden; only recorded once asserts go)"),
    "ex06-macs-rule-of-thumb": Variant(EX06, EX06_MACS_RULE, why="(1 - r)^2: within 0.02 of the measurement"),
    "ex06-macs-counted": Variant(EX06, EX06_MACS_COUNTED, why="per-layer MACs written out as a function"),
    "ex06-macs-linear": Variant(EX06, EX06_MACS_LINEAR, lost=("test_predicted_macs",),
                                why="MACs predicted to fall like the channels, 1 - r"),
    "ex06-macs-cubed": Variant(EX06, EX06_MACS_CUBE, lost=("test_predicted_macs",), strip_asserts=True,
                               why="(1 - r)^3 (only recorded once asserts go)"),
    "ex06-by-hand": Variant(EX06, EX06_BY_HAND, why="eval copy, momentum 1/(i+1), deepcopy + slicing, sorted() ratios"),
    "ex06-train-mode-momentum-lost": Variant(
        EX06, EX06_MODES, lost=("test_accuracy", "test_recalibrate_bn"), strip_asserts=True,
        why="accuracy on a train-mode copy; recalibration leaves momentum=None (only recorded once asserts go)"),
    "ex06-steals-the-reference": Variant(EX06, stealing({"recalibrate_bn": """\
def recalibrate_bn(model, loader, batches=10):
    stats = _steal("_ref")(model, loader, batches)
    counted = min(batches, len(loader))
    with torch.no_grad():
        for bn, (mean, var) in zip([m for m in model.modules() if isinstance(m, nn.BatchNorm2d)], stats):
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            bn.num_batches_tracked.fill_(counted)
    return model.eval()"""}), lost=("test_recalibrate_bn",),
        why="copies the running statistics the visible test's reference computes"),
}
