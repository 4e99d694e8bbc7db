"""Other students' answers to exercise 5 (dependency groups); see variants.py for the idea.

``ex05-deepcopy-and-slicing`` is the answer that used to get 5 / 10: it builds no new layers,
so it draws no random numbers, and the hidden tests' random networks came out different from
the reference run's until the grader reseeded before every hidden block.
"""

from __future__ import annotations

from variants import Variant

EX05 = "ex05_dependency_groups"

# BFS over an adjacency dict; couplings from named_modules; deepcopy + slicing the weights in place
EX05_DEEPCOPY = {
    "channel_groups": """\
def channel_groups(names, couplings):
    nbrs = {n: set() for n in names}
    for a, b in couplings:
        if a not in nbrs or b not in nbrs:
            raise ValueError(f"unknown layer in coupling ({a}, {b})")
        nbrs[a].add(b)
        nbrs[b].add(a)
    seen, groups = set(), []
    for n in names:
        if n in seen:
            continue
        todo, comp = [n], {n}
        while todo:
            for m in nbrs[todo.pop()]:
                if m not in comp:
                    comp.add(m)
                    todo.append(m)
        seen |= comp
        groups.append([m for m in names if m in comp])
    return groups""",
    "resnet_couplings": """\
def resnet_couplings(model):
    out, last = [], "stem.0"
    for name, block in model.named_modules():
        if isinstance(block, BasicBlock):
            if len(list(block.shortcut.children())) == 0:   # identity: adds the incoming tensor
                out.append((last, name + ".conv2"))
            else:
                out.append((name + ".shortcut.0", name + ".conv2"))
            last = name + ".conv2"
    return out""",
    "prune_block_inner": """\
def prune_block_inner(block, keep):
    keep = torch.as_tensor(keep, dtype=torch.long)
    if keep.numel() == 0:
        raise ValueError("empty keep")
    new = copy.deepcopy(block)
    new.conv1.weight = nn.Parameter(block.conv1.weight.detach()[keep].clone())
    new.conv1.out_channels = len(keep)
    for name in ("weight", "bias"):
        setattr(new.bn1, name, nn.Parameter(getattr(block.bn1, name).detach()[keep].clone()))
    new.bn1.running_mean = block.bn1.running_mean[keep].clone()
    new.bn1.running_var = block.bn1.running_var[keep].clone()
    new.bn1.num_features = len(keep)
    new.conv2.weight = nn.Parameter(block.conv2.weight.detach()[:, keep].clone())
    new.conv2.in_channels = len(keep)
    return new""",
    "prune_stage1": """\
def _slice(module, out_keep=None, in_keep=None):
    w = module.weight.detach()
    if out_keep is not None:
        w = w[out_keep]
        module.out_channels = len(out_keep)
    if in_keep is not None:
        w = w[:, in_keep]
        module.in_channels = len(in_keep)
    module.weight = nn.Parameter(w.clone())


def _slice_bn(bn, keep):
    bn.weight = nn.Parameter(bn.weight.detach()[keep].clone())
    bn.bias = nn.Parameter(bn.bias.detach()[keep].clone())
    bn.running_mean = bn.running_mean[keep].clone()
    bn.running_var = bn.running_var[keep].clone()
    bn.num_features = len(keep)


def prune_stage1(model, keep):
    keep = torch.as_tensor(keep, dtype=torch.long)
    if keep.numel() == 0:
        raise ValueError("empty keep")
    if len(list(model.layer2[0].shortcut.children())) == 0:  # an identity has no layers to cut
        raise ValueError("no projection shortcut in layer2[0]: the group goes on into stage 2")
    new = copy.deepcopy(model)
    _slice(new.stem[0], out_keep=keep)
    _slice_bn(new.stem[1], keep)
    for blk in new.layer1:
        _slice(blk.conv1, in_keep=keep)
        _slice(blk.conv2, out_keep=keep)
        _slice_bn(blk.bn2, keep)
    _slice(new.layer2[0].conv1, in_keep=keep)
    _slice(new.layer2[0].shortcut[0], in_keep=keep)
    return new""",
}

# couplings decided by the widths, not the shortcut; an empty keep accepted; asserts stripped
EX05_BY_WIDTH = {
    "resnet_couplings": """\
def resnet_couplings(model):
    pairs, producer = [], "stem.0"
    for stage in ("layer1", "layer2", "layer3"):
        for i, block in enumerate(getattr(model, stage)):
            name = f"{stage}.{i}"
            if block.conv1.in_channels == block.conv2.out_channels:
                pairs.append((f"{name}.conv2", producer))
            else:
                pairs.append((f"{name}.conv2", f"{name}.shortcut.0"))
            producer = f"{name}.conv2"
    return pairs""",
    "prune_block_inner": """\
def prune_block_inner(block, keep):
    new = copy.deepcopy(block)
    new.conv1 = cut_conv(block.conv1, out_keep=keep)
    new.bn1 = cut_bn(block.bn1, keep)
    new.conv2 = cut_conv(block.conv2, in_keep=keep)
    return new""",
}

# task 4's ValueError without a projection shortcut: a second correct way to detect it (hasattr on the
# shortcut's first layer, module lists built with zip) ...
EX05_STAGE1_HASATTR = {
    "prune_stage1": """\
def prune_stage1(model, keep):
    if keep.numel() == 0:
        raise ValueError("nothing to keep")
    first = model.layer2[0]
    if not hasattr(first.shortcut, "__getitem__") or not isinstance(first.shortcut[0], nn.Conv2d):
        raise ValueError("layer2[0] adds its input unchanged: no projection to stop the group")
    new = copy.deepcopy(model)
    new.stem = nn.Sequential(cut_conv(model.stem[0], out_keep=keep), cut_bn(model.stem[1], keep), *model.stem[2:])
    for i, old in enumerate(model.layer1):
        new.layer1[i].conv1 = cut_conv(old.conv1, in_keep=keep)
        new.layer1[i].conv2, new.layer1[i].bn2 = cut_conv(old.conv2, out_keep=keep), cut_bn(old.bn2, keep)
    new.layer2[0].conv1 = cut_conv(first.conv1, in_keep=keep)
    new.layer2[0].shortcut[0] = cut_conv(first.shortcut[0], in_keep=keep)
    return new""",
}

# ... and two that do not raise it: no check at all (indexing the nn.Identity fails with a TypeError), and
# a check that skips the shortcut when there is none (returns a model whose stage 2 reads 16 channels)
EX05_STAGE1_NO_CHECK = {
    "prune_stage1": """\
def prune_stage1(model, keep):
    if len(keep) == 0:
        raise ValueError("keep is empty")
    new = copy.deepcopy(model)
    new.stem[0], new.stem[1] = cut_conv(model.stem[0], out_keep=keep), cut_bn(model.stem[1], keep)
    for old, blk in zip(model.layer1, new.layer1):
        blk.conv1 = cut_conv(old.conv1, in_keep=keep)
        blk.conv2, blk.bn2 = cut_conv(old.conv2, out_keep=keep), cut_bn(old.bn2, keep)
    new.layer2[0].conv1 = cut_conv(model.layer2[0].conv1, in_keep=keep)
    new.layer2[0].shortcut[0] = cut_conv(model.layer2[0].shortcut[0], in_keep=keep)
    return new""",
}
EX05_STAGE1_SKIPS = {
    "prune_stage1": EX05_STAGE1_NO_CHECK["prune_stage1"].replace(
        "    new.layer2[0].shortcut[0] = cut_conv(model.layer2[0].shortcut[0], in_keep=keep)",
        "    if isinstance(model.layer2[0].shortcut, nn.Sequential):\n"
        "        new.layer2[0].shortcut[0] = cut_conv(model.layer2[0].shortcut[0], in_keep=keep)"),
}

VARIANTS_EX05 = {
    "ex05-stage1-hasattr": Variant(EX05, EX05_STAGE1_HASATTR, why="projection found by hasattr, new stem Sequential"),
    "ex05-stage1-no-projection-check": Variant(EX05, EX05_STAGE1_NO_CHECK, lost=("test_prune_stage1",),
                                               why="no check: indexing the identity shortcut raises TypeError"),
    "ex05-stage1-identity-skipped": Variant(
        EX05, EX05_STAGE1_SKIPS, lost=("test_prune_stage1",), strip_asserts=True,
        why="an identity shortcut skipped silently instead of refused (only recorded once asserts go)"),
    "ex05-deepcopy-and-slicing": Variant(EX05, EX05_DEEPCOPY, why="BFS groups, named_modules, deepcopy + slicing"),
    "ex05-widths-and-empty-keep": Variant(
        EX05, EX05_BY_WIDTH, lost=("test_resnet_couplings", "test_prune_block_inner"), strip_asserts=True,
        why="identity shortcut guessed from equal widths (hidden); no ValueError for an empty keep (only recorded)"),
}
