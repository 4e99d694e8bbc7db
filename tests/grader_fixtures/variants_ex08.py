"""Other students' answers to exercise 8 (N:M sparsity); see variants.py for the idea."""

from __future__ import annotations

from variants import Variant, stealing

EX08 = "ex08_nm_sparsity"

# loops over groups with argsort, a threshold per group; kthvalue for unstructured; nested dict build
EX08_LOOPS = {
    "nm_mask": """\
def nm_mask(weight, n=2, m=4):
    if weight.shape[1] % m != 0:
        raise ValueError("width %d is not divisible by %d" % (weight.shape[1], m))
    w = weight.detach().abs().transpose(0, 1).contiguous()       # inputs first
    flat = w.reshape(weight.shape[1], -1).t()                     # one row per output/position
    mask = torch.zeros_like(flat)
    for start in range(0, flat.shape[1], m):
        order = torch.argsort(flat[:, start:start + m], dim=1, descending=True)[:, :n]
        mask[:, start:start + m].scatter_(1, order, 1.0)
    return mask.t().reshape(w.shape).transpose(0, 1)""",
    "is_nm": """\
def is_nm(tensor, n=2, m=4):
    if tensor.shape[1] % m:
        return False
    t = tensor.transpose(0, 1).reshape(tensor.shape[1], -1)
    for start in range(0, tensor.shape[1], m):
        if ((t[start:start + m] != 0).sum(dim=0) > n).any():
            return False
    return True""",
    "storage_bytes": """\
def storage_bytes(shape, n=2, m=4, value_bytes=4, index_bytes=4):
    numel = 1
    for s in shape:
        numel *= s
    nnz = numel * n // m
    bits = (m - 1).bit_length()
    nm_bytes = nnz * value_bytes + (nnz * bits + 7) // 8
    csr = nnz * value_bytes + nnz * index_bytes + index_bytes * (shape[0] + 1)
    return dict(dense=numel * value_bytes, nm=nm_bytes, csr=csr)""",
    "sparsify": """\
def sparsify(model, pattern):
    if pattern == "2:4":
        make = lambda w: nm_mask(w, 2, 4).bool()
    elif pattern == "unstructured":
        def make(w):
            k = w.numel() // 2
            threshold = w.abs().flatten().kthvalue(k).values
            return w.abs() > threshold
    else:
        raise ValueError(pattern)
    new = copy.deepcopy(model)
    for name, layer in new.named_modules():
        if type(layer) in (nn.Conv2d, nn.Linear) and layer.weight.shape[1] % 4 == 0:
            layer.weight.data = layer.weight.data * make(layer.weight.data)
    return new""",
    "compare": """\
def compare(models, test_loader, calib_loader):
    out = {}
    for name in models:
        before = evaluate(models[name], test_loader).accuracy
        twin = copy.deepcopy(models[name])
        recalibrate_bn(twin, calib_loader, batches=10)
        out[name] = (before, evaluate(twin, test_loader).accuracy)
    return out""",
}

# groups along the LAST dimension (kw) instead of the inputs, and is_nm along the same wrong axis
EX08_LAST_DIM = {
    "nm_mask": """\
def nm_mask(weight, n=2, m=4):
    if weight.shape[1] % m:
        raise ValueError("width not a multiple of m")
    groups = weight.detach().abs().reshape(-1, m)
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, groups.topk(n, dim=1).indices, True)
    return keep.reshape(weight.shape)""",
    "is_nm": """\
def is_nm(tensor, n=2, m=4):
    if tensor.shape[1] % m:
        return False
    return bool(((tensor != 0).reshape(-1, m).sum(1) <= n).all())""",
}

# CSR without the extra row pointer, N:M metadata of 1 byte per value; compare recalibrates in place
EX08_OFF_BY_ONE = {
    "storage_bytes": """\
def storage_bytes(shape, n=2, m=4, value_bytes=4, index_bytes=4):
    numel = math.prod(shape)
    nnz = numel // m * n
    return {"dense": numel * value_bytes, "nm": nnz * (value_bytes + 1),
            "csr": nnz * (value_bytes + index_bytes) + shape[0] * index_bytes}""",
    "compare": """\
def compare(models, test_loader, calib_loader):
    out = {}
    for name, model in models.items():
        raw = evaluate(model, test_loader).accuracy
        recalibrate_bn(model, calib_loader, batches=10)
        out[name] = (raw, evaluate(model, test_loader).accuracy)
    return out""",
}

# unstructured by a global threshold over the whole model instead of per layer; prune hooks left on
EX08_GLOBAL_HOOKS = {
    "sparsify": """\
def sparsify(model, pattern):
    from torch.nn.utils import prune
    if pattern not in ("2:4", "unstructured"):
        raise ValueError(pattern)
    new = copy.deepcopy(model)
    layers = [m for m in new.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.shape[1] % 4 == 0]
    if pattern == "2:4":
        for layer in layers:
            prune.custom_from_mask(layer, "weight", nm_mask(layer.weight, 2, 4).bool())
    else:
        prune.global_unstructured([(layer, "weight") for layer in layers], prune.L1Unstructured, amount=0.5)
    return new""",
}

# a correct mask whose ValueError does not name the width (the text asks for it)
EX08_SILENT_MESSAGE = {"nm_mask": EX08_LOOPS["nm_mask"].replace(
    'raise ValueError("width %d is not divisible by %d" % (weight.shape[1], m))',
    'raise ValueError("the width is not divisible by m")')}

VARIANTS_EX08 = {
    "ex08-message-without-width": Variant(EX08, EX08_SILENT_MESSAGE, lost=("test_nm_mask",),
                                          why="the ValueError does not name the input width"),
    "ex08-loops-and-kthvalue": Variant(EX08, EX08_LOOPS, why="per-group loops, kthvalue threshold, float masks"),
    "ex08-groups-along-last-dim": Variant(EX08, EX08_LAST_DIM, lost=("test_nm_mask", "test_is_nm"),
                                          why="groups of m along the flattened tensor, not along the inputs "
                                              "(task 4 uses the student's own nm_mask and is_nm: graded on its own)"),
    "ex08-csr-and-metadata-off": Variant(EX08, EX08_OFF_BY_ONE, lost=("test_storage_bytes", "test_compare"),
                                         why="rows instead of rows + 1 pointers; a byte per position; "
                                             "recalibrates the models it was given"),
    "ex08-global-threshold-and-hooks": Variant(EX08, EX08_GLOBAL_HOOKS, lost=("test_sparsify",),
                                               why="one threshold for all layers, torch.nn.utils.prune hooks left on"),
    "ex08-steals-the-reference": Variant(EX08, stealing({"nm_mask": """\
def nm_mask(weight, n=2, m=4):
    if weight.shape[1] % m:
        raise ValueError(f"input width {weight.shape[1]} is not a multiple of {m}")
    return _steal("_ref")(weight, n, m)"""}), lost=("test_nm_mask", "test_is_nm", "test_sparsify"),
                                         why="runs the test's own reference mask (line cache of the running cell); "
                                             "with none to take it has no nm_mask, which tasks 2 and 4 build on"),
}
