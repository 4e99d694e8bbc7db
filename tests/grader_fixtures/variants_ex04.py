"""Other students' answers to exercise 4 (Taylor importance); see variants.py for the idea."""

from __future__ import annotations

from variants import Variant, stealing

EX04 = "ex04_taylor"

# .backward() on a deep copy, ranks with argsort twice and a tie average, oracle on copies
EX04_COPIES = {
    "taylor_conv": """\
def taylor_conv_scores(model, conv, batches):
    twin = copy.deepcopy(model).eval()
    name = next(n for n, m in model.named_modules() if m is conv)
    twin_conv = dict(twin.named_modules())[name]
    per_batch = []
    for x, y in batches:
        twin.zero_grad(set_to_none=True)
        F.cross_entropy(twin(x), y).backward()
        per_batch.append((twin_conv.weight * twin_conv.weight.grad).sum(dim=(1, 2, 3)).abs().detach())
    return torch.stack(per_batch).mean(dim=0)""",
    "taylor_bn": """\
def taylor_bn_scores(model, bn, batches):
    twin = copy.deepcopy(model).eval()
    name = next(n for n, m in model.named_modules() if m is bn)
    gate = dict(twin.named_modules())[name]
    total = 0
    for x, y in batches:
        g_gamma, g_beta = torch.autograd.grad(F.cross_entropy(twin(x), y), [gate.weight, gate.bias])
        total = total + (gate.weight * g_gamma + gate.bias * g_beta).detach().abs()
    return total / len(batches)""",
    "spearman": """\
def spearman(a, b):
    x, y = a.detach().reshape(-1).double(), b.detach().reshape(-1).double()
    if len(x) != len(y) or len(x) < 2:
        raise ValueError("two vectors of equal length >= 2")

    def avg_ranks(v):
        order = torch.argsort(v, stable=True)
        ranks = torch.empty_like(v)
        sv = v[order]
        i = 0
        while i < len(v):
            j = i
            while j + 1 < len(v) and sv[j + 1] == sv[i]:
                j += 1
            ranks[order[i:j + 1]] = (i + j) / 2 + 1
            i = j + 1
        return ranks

    rx, ry = avg_ranks(x), avg_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = torch.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float("nan") if den == 0 else float((rx * ry).sum() / den)""",
    "oracle": """\
def oracle_loss_increase(model, bn, batches):
    name = next(n for n, m in model.named_modules() if m is bn)
    base_model = copy.deepcopy(model).eval()

    @torch.no_grad()
    def loss(m):
        return sum(F.cross_entropy(m(x), y).item() for x, y in batches) / len(batches)

    base = loss(base_model)
    out = []
    for c in range(bn.num_features):
        cut = copy.deepcopy(base_model)
        with torch.no_grad():
            layer = dict(cut.named_modules())[name]
            layer.weight[c] = 0.0
            layer.bias[c] = 0.0
        out.append(loss(cut) - base)
    return torch.tensor(out)""",
}

# train-mode scores and .grad left behind (only recorded once asserts go); oracle that forgets the mode
EX04_TRAIN_MODE = {
    "taylor_conv": """\
def taylor_conv_scores(model, conv, batches):
    total = torch.zeros(conv.out_channels)
    for x, y in batches:
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        total += (conv.weight * conv.weight.grad).sum(dim=(1, 2, 3)).abs().detach()
    return total / len(batches)""",
    "oracle": """\
def oracle_loss_increase(model, bn, batches):
    model.eval()
    out = torch.zeros(bn.num_features)
    with torch.no_grad():
        base = sum(float(F.cross_entropy(model(x), y)) for x, y in batches) / len(batches)
        for c in range(bn.num_features):
            g, b = bn.weight[c].item(), bn.bias[c].item()
            bn.weight[c] = bn.bias[c] = 0.0
            out[c] = sum(float(F.cross_entropy(model(x), y)) for x, y in batches) / len(batches) - base
            bn.weight[c], bn.bias[c] = g, b
    return out""",
}

# the gamma-only score (what this exercise asked before it followed the paper); oracle zeroes gamma only
EX04_GAMMA_ONLY = {
    "taylor_bn": """\
def taylor_bn_scores(model, bn, batches):
    was = model.training
    model.eval()
    total = torch.zeros(bn.num_features)
    for x, y in batches:
        (g,) = torch.autograd.grad(F.cross_entropy(model(x), y), bn.weight)
        total += (bn.weight.detach() * g).abs()
    model.train(was)
    return total / len(batches)""",
    "oracle": """\
def oracle_loss_increase(model, bn, batches):
    was = model.training
    model.eval()
    loss = lambda: sum(float(F.cross_entropy(model(x), y)) for x, y in batches) / len(batches)
    out = torch.zeros(bn.num_features)
    with torch.no_grad():
        base = loss()
        for c in range(bn.num_features):
            g = bn.weight[c].item()
            bn.weight[c] = 0.0
            out[c] = loss() - base
            bn.weight[c] = g
    model.train(was)
    return out""",
}

# task 5, the consumer side: a loop over channels with isinstance, and einsum with the layer's own attributes
EX04_CONSUMER_LOOP = {
    "consumer_scores": """\
def consumer_scores(bn, next_layer):
    if isinstance(next_layer, nn.Conv2d):
        if next_layer.groups > 1 or next_layer.in_channels != bn.num_features:
            raise ValueError("not a plain conv reading these channels")
    elif isinstance(next_layer, nn.Linear):
        if next_layer.in_features != bn.num_features:
            raise ValueError("not a linear layer reading these channels")
    consumer = torch.stack([next_layer.weight[:, c].detach().abs().sum() for c in range(bn.num_features)])
    combined = torch.stack([bn.weight[c].detach().abs() * consumer[c] for c in range(bn.num_features)])
    return consumer, combined""",
}
EX04_CONSUMER_EINSUM = {
    "consumer_scores": """\
def consumer_scores(bn, next_layer):
    w = next_layer.weight.detach()
    if getattr(next_layer, "groups", 1) > 1 or w.size(1) != bn.weight.numel():
        raise ValueError("next_layer must read every channel of bn, ungrouped")
    flat = w.abs().flatten(2) if w.dim() > 2 else w.abs().unsqueeze(2)   # (out, in, positions)
    consumer = torch.einsum("oip->i", flat)
    return consumer, consumer * bn.weight.detach().abs()""",
}

# two wrong consumers: the next layer's *rows* (its own producer side) summed per input, i.e. the L2 norm
# of columns; and the in_channels attribute trusted, so a grouped conv slips through (asserts stripped)
EX04_CONSUMER_L2 = {
    "consumer_scores": """\
def consumer_scores(bn, next_layer):
    if getattr(next_layer, "groups", 1) != 1:
        raise ValueError("grouped")
    w = next_layer.weight.detach()
    if w.shape[1] != bn.num_features:
        raise ValueError("width")
    consumer = w.transpose(0, 1).reshape(w.shape[1], -1).norm(dim=1)
    return consumer, bn.weight.detach().abs() * consumer""",
}
EX04_CONSUMER_GROUPED = {
    "consumer_scores": """\
def consumer_scores(bn, next_layer):
    n_in = next_layer.in_channels if isinstance(next_layer, nn.Conv2d) else next_layer.in_features
    if n_in != bn.num_features:
        raise ValueError("next_layer does not read bn's channels")
    w = next_layer.weight.detach().abs()
    consumer = w.sum(dim=(0, 2, 3)) if w.dim() == 4 else w.sum(dim=0)
    return consumer, bn.weight.detach().abs() * consumer""",
}

# the BN-gate scores with their graph attached (gamma and beta not detached)
EX04_BN_ATTACHED = {
    "taylor_bn": """\
def taylor_bn_scores(model, bn, batches):
    was_training = model.training
    model.eval()
    total = torch.zeros(bn.num_features)
    for x, y in batches:
        g_gamma, g_beta = torch.autograd.grad(F.cross_entropy(model(x), y), [bn.weight, bn.bias])
        total = total + (bn.weight * g_gamma + bn.bias * g_beta).abs()
    model.train(was_training)
    return total / len(batches)""",
}

VARIANTS_EX04 = {
    "ex04-bn-scores-attached": Variant(EX04, EX04_BN_ATTACHED, lost=("test_taylor_bn",),
                                       why="the BN-gate scores still require grad (hidden)"),
    "ex04-consumer-loop": Variant(EX04, EX04_CONSUMER_LOOP, why="consumer side: a loop over channels, isinstance"),
    "ex04-consumer-einsum": Variant(EX04, EX04_CONSUMER_EINSUM, why="consumer side: einsum over (out, in, positions)"),
    "ex04-consumer-l2": Variant(EX04, EX04_CONSUMER_L2, lost=("test_consumer_scores",),
                                why="the L2 norm of the next layer's columns, not their L1 norm"),
    "ex04-consumer-grouped-accepted": Variant(
        EX04, EX04_CONSUMER_GROUPED, lost=("test_consumer_scores",), strip_asserts=True,
        why="in_channels trusted: a grouped conv is scored, not refused (only recorded once asserts go)"),
    "ex04-deep-copies": Variant(EX04, EX04_COPIES, why="backward() on a copy, argsort ranks, oracle on copies"),
    "ex04-train-mode-and-mode-lost": Variant(
        EX04, EX04_TRAIN_MODE, lost=("test_taylor_conv", "test_oracle"), strip_asserts=True,
        why="scores in the model's (train) mode with .grad left behind; oracle leaves the model in eval mode"),
    "ex04-gamma-only": Variant(EX04, EX04_GAMMA_ONLY, lost=("test_taylor_bn", "test_oracle"),
                               why="the gate without beta: neither the score nor the cut zeroes the shift"),
    "ex04-steals-the-references": Variant(EX04, stealing({
        "taylor_conv": """\
def taylor_conv_scores(model, conv, batches):
    return _steal("_ref_conv")(model, next(n for n, m in model.named_modules() if m is conv), batches)""",
        "taylor_bn": """\
def taylor_bn_scores(model, bn, batches):
    return _steal("_ref_bn")(model, next(n for n, m in model.named_modules() if m is bn), batches)""",
        "oracle": """\
def oracle_loss_increase(model, bn, batches):
    return _steal("_ref_oracle")(model, next(n for n, m in model.named_modules() if m is bn), batches)"""}),
        lost=("test_taylor_conv", "test_taylor_bn", "test_oracle"),
        why="calls the visible tests' reference functions through the caller's globals"),
}
