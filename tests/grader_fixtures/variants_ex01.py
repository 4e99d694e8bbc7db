"""Other students' answers to exercise 1 (why structured pruning); see variants.py for the idea."""

from __future__ import annotations

from variants import Variant

EX01 = "ex01_why_structured"

# sorted() with an (|w|, index) key, count_nonzero, a search over nnz, MACs from a real forward pass
EX01_PLAIN_PYTHON = {
    "magnitude_mask": """\
def magnitude_mask(weight, sparsity):
    if sparsity < 0 or sparsity > 1:
        raise ValueError("sparsity out of range: " + repr(sparsity))
    flat = weight.detach().reshape(-1).abs().tolist()
    order = sorted(range(len(flat)), key=lambda i: (flat[i], i))
    keep = torch.ones(len(flat), dtype=torch.bool)
    for i in order[: int(sparsity * len(flat))]:
        keep[i] = False
    return keep.reshape(weight.shape)""",
    "csr_bytes": """\
def csr_bytes(keep, value_bytes=4, index_bytes=4):
    if len(keep.shape) != 2:
        raise ValueError("CSR needs a matrix")
    nnz = keep.count_nonzero().item()
    return value_bytes * nnz + index_bytes * nnz + index_bytes * (keep.size(0) + 1)""",
    "break_even": """\
def break_even_sparsity(rows, cols, value_bytes=4, index_bytes=4):
    total = rows * cols
    lo, hi = 0, total  # the largest nnz whose CSR fits in the dense size, by bisection
    if (rows + 1) * index_bytes > total * value_bytes:
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if mid * (value_bytes + index_bytes) + (rows + 1) * index_bytes <= total * value_bytes:
            lo = mid
        else:
            hi = mid - 1
    return (total - lo) / total""",
    "conv_macs": """\
def conv_macs(conv, h, w):
    with torch.no_grad():
        out = conv(torch.zeros(1, conv.in_channels, h, w))
    return int(out.numel() * conv.weight[0].numel())""",
    "chain_macs": """\
def chain_macs(in_channels, widths, removed, h, w):
    if len(widths) != len(removed) or removed[-1] != 0 or any(r >= n for n, r in zip(widths, removed)):
        raise ValueError("bad removed counts")
    def macs(outs):
        total, prev = 0, in_channels
        for o in outs:
            total += prev * o * 3 * 3 * h * w
            prev = o
        return total
    d = macs(widths)
    return dict(dense=d, masked=d, removed=macs([n - r for n, r in zip(widths, removed)]))""",
}

# no range check (sparsity is clamped), and the row-pointer array one entry short; asserts stripped
EX01_NO_CHECKS = {
    "magnitude_mask": """\
def magnitude_mask(weight, sparsity):
    sparsity = min(max(sparsity, 0.0), 1.0)
    n = weight.numel()
    keep = torch.ones(n, dtype=torch.bool)
    keep[torch.argsort(weight.detach().abs().flatten(), stable=True)[: int(sparsity * n)]] = False
    return keep.view(weight.shape)""",
    "csr_bytes": """\
def csr_bytes(keep, value_bytes=4, index_bytes=4):
    if keep.dim() != 2:
        raise ValueError("2-D only")
    return int(keep.sum()) * (value_bytes + index_bytes) + keep.shape[0] * index_bytes""",
}

# a correct mask whose ValueError does not say which value was wrong (the text asks for it)
EX01_SILENT_MESSAGE = {
    "magnitude_mask": """\
def magnitude_mask(weight, sparsity):
    if not 0 <= sparsity <= 1:
        raise ValueError("invalid sparsity")
    n = weight.numel()
    keep = torch.ones(n, dtype=torch.bool)
    keep[torch.argsort(weight.detach().abs().flatten(), stable=True)[: int(sparsity * n)]] = False
    return keep.view(weight.shape)""",
}

VARIANTS_EX01 = {
    "ex01-message-without-the-value": Variant(EX01, EX01_SILENT_MESSAGE, lost=("test_magnitude_mask",),
                                              why="the ValueError does not name the bad sparsity"),
    "ex01-plain-python": Variant(EX01, EX01_PLAIN_PYTHON, why="sorted() key, count_nonzero, bisection, a forward pass"),
    "ex01-no-range-check-short-pointers": Variant(
        EX01, EX01_NO_CHECKS, lost=("test_magnitude_mask", "test_csr_bytes"), strip_asserts=True,
        why="no ValueError for a bad sparsity (only recorded), rows instead of rows + 1 pointers"),
}
