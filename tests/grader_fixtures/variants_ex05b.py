"""Other students' answers to exercise 5b (the bug hunt); see variants.py for the idea.

Every task is graded by the zero-mask check on the student's own pruned networks (plus their widths,
the removed indices and the input left alone), so any exact fix passes however it chooses or cuts
the channels; a fix that leaves the bug in, or forges the check, loses exactly that task.
"""

from __future__ import annotations

from variants import Variant

EX05B = "ex05b_bug_hunt"

# by hand: boolean masks and index_select, modules edited in place on a deep copy (no cut_* helper),
# the residual channels chosen by the stem's norms alone, the LayerNorm recognised by its attribute
EX05B_BY_HAND = {
    "prune_residual": """\
def _slice(module, out_idx=None, in_idx=None):
    with torch.no_grad():
        if out_idx is not None:
            module.weight = nn.Parameter(module.weight.index_select(0, out_idx).clone())
            if getattr(module, "bias", None) is not None:
                module.bias = nn.Parameter(module.bias.index_select(0, out_idx).clone())
            for buffer in ("running_mean", "running_var"):
                if getattr(module, buffer, None) is not None:
                    setattr(module, buffer, getattr(module, buffer).index_select(0, out_idx).clone())
        if in_idx is not None:
            module.weight = nn.Parameter(module.weight.index_select(1, in_idx).clone())
    if isinstance(module, nn.Conv2d):
        module.out_channels, module.in_channels = module.weight.shape[0], module.weight.shape[1]
    elif isinstance(module, nn.Linear):
        module.out_features, module.in_features = module.weight.shape
    else:
        module.num_features = module.weight.shape[0]


def prune_residual(model, n):
    norms = model.stem[0].weight.detach().abs().sum(dim=(1, 2, 3))
    drop = torch.zeros(len(norms), dtype=torch.bool)
    drop[norms.argsort()[:n]] = True
    keep = (~drop).nonzero().flatten()
    new = copy.deepcopy(model)
    for layer in (new.stem[0], new.stem[1], new.block.conv2, new.block.bn2):
        _slice(layer, out_idx=keep)
    _slice(new.block.conv1, in_idx=keep)
    _slice(new.head[2], in_idx=keep)
    return new, drop.nonzero().flatten().tolist()""",
    "prune_chain": """\
def prune_chain(model, n):
    norms = model.conv1.weight.detach().abs().sum(dim=(1, 2, 3))
    drop = torch.zeros(len(norms), dtype=torch.bool)
    drop[norms.argsort()[:n]] = True
    keep = (~drop).nonzero().flatten()
    new = copy.deepcopy(model)
    _slice(new.conv1, out_idx=keep)
    _slice(new.bn1, out_idx=keep)
    _slice(new.conv2, in_idx=keep)
    return new, drop.nonzero().flatten().tolist()""",
    "prune_flatten": """\
def prune_flatten(model, n):
    norms = model.conv.weight.detach().abs().sum(dim=(1, 2, 3))
    drop = torch.zeros(len(norms), dtype=torch.bool)
    drop[norms.argsort()[:n]] = True
    keep = (~drop).nonzero().flatten()
    new = copy.deepcopy(model)
    _slice(new.conv, out_idx=keep)
    _slice(new.bn, out_idx=keep)
    features = (~drop).repeat_interleave(16).nonzero().flatten()  # channel-major: 16 features per channel
    _slice(new.fc, in_idx=features)
    return new, drop.nonzero().flatten().tolist()""",
    "prune_depthwise": """\
def prune_depthwise(model, n):
    norms = model.stem[0].weight.detach().abs().sum(dim=(1, 2, 3))
    drop = torch.zeros(len(norms), dtype=torch.bool)
    drop[norms.argsort()[:n]] = True
    keep = (~drop).nonzero().flatten()
    outs = (~drop).repeat_interleave(2).nonzero().flatten()  # outputs 2c, 2c+1 belong to group c
    new = copy.deepcopy(model)
    _slice(new.stem[0], out_idx=keep)
    _slice(new.stem[1], out_idx=keep)
    _slice(new.dw[0], out_idx=outs)
    new.dw[0].in_channels = new.dw[0].groups = len(keep)
    _slice(new.dw[1], out_idx=outs)
    _slice(new.pw[0], in_idx=outs)
    return new, drop.nonzero().flatten().tolist()""",
    "prune_normed": """\
def prune_normed(model, n):
    if hasattr(model.norm, "normalized_shape"):
        raise ValueError("a LayerNorm mixes the channels it normalises: not prunable exactly")
    norms = model.conv1.weight.detach().abs().sum(dim=(1, 2, 3))
    drop = torch.zeros(len(norms), dtype=torch.bool)
    drop[norms.argsort()[:n]] = True
    keep = (~drop).nonzero().flatten()
    new = copy.deepcopy(model)
    _slice(new.conv1, out_idx=keep)
    _slice(new.norm, out_idx=keep)
    _slice(new.conv2, in_idx=keep)
    return new, drop.nonzero().flatten().tolist()""",
}

# fresh layers filled through load_state_dict; the channels with the *largest* norms removed (any choice is
# fine: the check is exactness); removed returned as a tensor; the LayerNorm refused after a deep copy
EX05B_STATE_DICT = {
    "prune_residual": """\
def _fresh(layer, out_idx=None, in_idx=None):
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    for key in list(state):
        if out_idx is not None and state[key].dim() >= 1 and key != "num_batches_tracked":
            state[key] = state[key][out_idx]
        if in_idx is not None and key == "weight" and state[key].dim() >= 2:
            state[key] = state[key][:, in_idx]
    w = state["weight"]
    if isinstance(layer, nn.Conv2d):
        groups = 1 if layer.groups == 1 else w.shape[0] // (layer.out_channels // layer.groups)
        new = nn.Conv2d(w.shape[1] * groups, w.shape[0], layer.kernel_size, layer.stride, layer.padding,
                        groups=groups, bias=layer.bias is not None)
    elif isinstance(layer, nn.Linear):
        new = nn.Linear(w.shape[1], w.shape[0], bias=layer.bias is not None)
    else:
        new = nn.BatchNorm2d(w.shape[0], eps=layer.eps, momentum=layer.momentum)
    new.load_state_dict(state)
    return new.train(layer.training)


def prune_residual(model, n):
    score = model.stem[0].weight.abs().sum((1, 2, 3)) + model.block.conv2.weight.abs().sum((1, 2, 3))
    removed = score.topk(n).indices.sort().values
    keep = torch.tensor([i for i in range(len(score)) if i not in removed.tolist()])
    new = copy.deepcopy(model)
    new.stem[0], new.stem[1] = _fresh(model.stem[0], out_idx=keep), _fresh(model.stem[1], out_idx=keep)
    new.block.conv1 = _fresh(model.block.conv1, in_idx=keep)
    new.block.conv2, new.block.bn2 = _fresh(model.block.conv2, out_idx=keep), _fresh(model.block.bn2, out_idx=keep)
    new.head[2] = _fresh(model.head[2], in_idx=keep)
    return new, removed""",
    "prune_chain": """\
def prune_chain(model, n):
    removed = model.conv1.weight.abs().sum((1, 2, 3)).topk(n).indices.sort().values
    keep = torch.tensor([i for i in range(model.conv1.out_channels) if i not in removed.tolist()])
    new = copy.deepcopy(model)
    new.conv1, new.bn1 = _fresh(model.conv1, out_idx=keep), _fresh(model.bn1, out_idx=keep)
    new.conv2 = _fresh(model.conv2, in_idx=keep)
    return new, removed""",
    "prune_flatten": """\
def prune_flatten(model, n):
    removed = model.conv.weight.abs().sum((1, 2, 3)).topk(n).indices.sort().values
    keep = torch.tensor([i for i in range(model.conv.out_channels) if i not in removed.tolist()])
    features = torch.arange(model.fc.in_features).view(model.conv.out_channels, 16)[keep].flatten()
    new = copy.deepcopy(model)
    new.conv, new.bn = _fresh(model.conv, out_idx=keep), _fresh(model.bn, out_idx=keep)
    new.fc = _fresh(model.fc, in_idx=features)
    return new, removed""",
    "prune_depthwise": """\
def prune_depthwise(model, n):
    width = model.stem[0].out_channels
    removed = model.stem[0].weight.abs().sum((1, 2, 3)).topk(n).indices.sort().values
    keep = torch.tensor([i for i in range(width) if i not in removed.tolist()])
    outs = torch.arange(2 * width).view(width, 2)[keep].flatten()
    new = copy.deepcopy(model)
    new.stem[0], new.stem[1] = _fresh(model.stem[0], out_idx=keep), _fresh(model.stem[1], out_idx=keep)
    new.dw[0], new.dw[1] = _fresh(model.dw[0], out_idx=outs), _fresh(model.dw[1], out_idx=outs)
    new.pw[0] = _fresh(model.pw[0], in_idx=outs)
    return new, removed""",
    "prune_normed": """\
def prune_normed(model, n):
    new = copy.deepcopy(model)
    if type(new.norm).__name__ == "LayerNorm2d":
        raise ValueError("LayerNorm normalises over all channels; removing some is not exact")
    removed = model.conv1.weight.abs().sum((1, 2, 3)).topk(n).indices.sort().values
    keep = torch.tensor([i for i in range(model.conv1.out_channels) if i not in removed.tolist()])
    new.conv1, new.norm = _fresh(model.conv1, out_idx=keep), _fresh(model.norm, out_idx=keep)
    new.conv2 = _fresh(model.conv2, in_idx=keep)
    return new, removed""",
}

# two bugs left in, with the asserts stripped: only the records can catch them
EX05B_TWO_LEFT = {
    "prune_flatten": "prune_flatten = prune_flatten_broken  # 'it runs, so it is fine'",
    "prune_normed": """\
def prune_normed(model, n):
    if isinstance(model.norm, nn.LayerNorm):
        return copy.deepcopy(model), []  # "nothing to prune here" -- silently, instead of refusing
    return prune_normed_broken(model, n)""",
}

# plausible half-fixes: running_var forgotten; depthwise groups made consistent by keeping one filter per channel
EX05B_HALF_FIXED = {
    "prune_chain": """\
def prune_chain(model, n):
    new, removed = prune_chain_broken(model, n)
    keep = complement(removed, model.conv1.out_channels)
    with torch.no_grad():
        new.bn1.running_mean.copy_(model.bn1.running_mean[keep])  # running_var forgotten
    return new, removed""",
    "prune_depthwise": """\
def prune_depthwise(model, n):
    width = model.stem[0].out_channels
    new = copy.deepcopy(model)
    removed = lowest_l1(model.stem[0].weight, n=n)
    keep = complement(removed, width)
    new.stem[0], new.stem[1] = cut_conv(model.stem[0], out_keep=keep), cut_bn(model.stem[1], keep)
    outs = 2 * keep  # one filter per channel: groups consistent, the second filter lost
    new.dw[0] = nn.Conv2d(len(keep), len(outs), 3, padding=1, groups=len(keep), bias=False)
    with torch.no_grad():
        new.dw[0].weight.copy_(model.dw[0].weight[outs])
    new.dw[1] = cut_bn(model.dw[1], outs)
    new.pw[0] = cut_conv(model.pw[0], in_keep=outs)
    return new, removed""",
}

# forged: the zero-masked network handed back as "pruned" (exact, but nothing removed), and the check patched
EX05B_FORGED = {
    "prune_residual": """\
mask_error = lambda *args, **kwargs: 0.0


def prune_residual(model, n):
    removed = lowest_l1(model.stem[0].weight, model.block.conv2.weight, n=n)
    return zero_masked(model, residual_channels(removed)), removed""",
}

VARIANTS_EX05B = {
    "ex05b-by-hand": Variant(EX05B, EX05B_BY_HAND, why="masks + index_select, modules edited in place, stem-only pick"),
    "ex05b-state-dict": Variant(EX05B, EX05B_STATE_DICT, why="fresh layers + load_state_dict, largest norms removed"),
    "ex05b-two-bugs-left": Variant(EX05B, EX05B_TWO_LEFT, lost=("test_prune_flatten", "test_prune_normed"),
                                   strip_asserts=True, why="flatten still channels-last; LayerNorm silently skipped"),
    "ex05b-half-fixed": Variant(EX05B, EX05B_HALF_FIXED, lost=("test_prune_chain", "test_prune_depthwise"),
                                why="running_var not cut; one depthwise filter per channel"),
    "ex05b-forged-check": Variant(EX05B, EX05B_FORGED, lost=("test_prune_residual",), strip_asserts=True,
                                  why="the zero-masked network as the answer, mask_error patched to 0"),
}
