"""Other students' answers to the real exercises, with the scores the grader must give them.

The reference solution getting full marks proves little on its own: the hidden tests and the
recorded values must also accept a *different* correct answer (other tensor idioms, other
summation orders, ``copy.deepcopy`` instead of new layers) and reject the plausible wrong ones.
Each :class:`Variant` replaces some solution cells of a solution notebook (by grade_id; the
other cells keep the reference answer) and names the tasks that must then score 0 -- every
other task must get full marks.

Two checks are added by ``tests/test_grade_solutions.py`` itself: every correct variant (no
``lost`` tasks) also draws random numbers in every function it defines, so a hidden test that
depends on the global generator shows up; and a variant with ``strip_asserts`` registers an
IPython AST transformer that deletes every ``assert`` and ``raise AssertionError`` of the test
cells, so it loses only what the *recorded* values catch -- proof that each asserted property
is recorded.
One file per exercise: ``variants_exNN.py``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    exercise: str  # the solution notebook's stem
    sources: dict[str, str]  # solution grade_id -> the student's cell
    lost: tuple[str, ...] = ()  # test grade_ids that must score 0
    message: str = ""  # a text every lost task's message must contain
    why: str = ""
    strip_asserts: bool = False  # the test cells run without their asserts: only records can catch it


# ---------------------------------------------------------------- answers taken from the test itself
# A test cell runs in the student's kernel, so a solution can read it while it runs: the calling frame's
# globals (a visible helper) and its source through the line cache (a hidden one, not yet defined when the
# visible part calls the function). Any reference implementation found there is run as "the answer".
# These variants must lose every task whose test carries one: tests hold no reference implementations.
STEAL = """\
import ast as _ast
import linecache as _linecache
import sys as _sys


def _steal(prefix):
    \"\"\"The test's own reference: a function named prefix* in the caller's globals or source.\"\"\"
    frame = _sys._getframe(2)
    for name, value in frame.f_globals.items():
        if name.startswith(prefix) and callable(value):
            return value
    source = "".join(_linecache.getlines(frame.f_code.co_filename))
    for node in _ast.parse(source).body:
        if isinstance(node, _ast.FunctionDef) and node.name.startswith(prefix):
            namespace = dict(frame.f_globals)
            exec(compile(_ast.Module([node], []), "<lifted>", "exec"), namespace)
            return namespace[node.name]
    raise NotImplementedError(f"no {prefix}* in the test to copy")


"""


def stealing(sources: dict[str, str]) -> dict[str, str]:
    """``sources`` with the ``_steal`` helper in front of each cell."""
    return {gid: STEAL + src for gid, src in sources.items()}


# ---------------------------------------------------------------- ex07: heads, exact cuts, distillation
EX07 = "ex07_transformer_heads"

# deepcopy + boolean masks + fresh Parameters; the gradient from exp(log_softmax) and scatter_add
EX07_MASKS = {
    "head_scores": """\
def head_scores(attn):
    inner, hd = attn.heads * attn.head_dim, attn.head_dim
    scores = []
    for h in range(attn.heads):
        rows = torch.cat([torch.arange(s, s + hd) for s in (h * hd, inner + h * hd, 2 * inner + h * hd)])
        scores.append(attn.qkv.weight.detach().index_select(0, rows).abs().sum())
    return torch.stack(scores)""",
    "remove_heads": """\
def remove_heads(attn, heads):
    if any(h not in range(attn.heads) for h in heads) or len(set(heads)) >= attn.heads:
        raise ValueError("no such head, or no head left")
    mask = torch.ones(attn.heads, dtype=torch.bool)
    mask[list(heads)] = False
    cols = mask.repeat_interleave(attn.head_dim)  # one flag per input column of proj
    rows = cols.repeat(3)                         # the q, k and v blocks of qkv
    new = copy.deepcopy(attn)
    new.qkv = nn.Linear(attn.dim, int(rows.sum()))
    new.qkv.weight = nn.Parameter(attn.qkv.weight.detach()[rows].clone())
    new.qkv.bias = nn.Parameter(attn.qkv.bias.detach()[rows].clone())
    new.proj.weight = nn.Parameter(new.proj.weight.detach()[:, cols].clone())
    new.proj.in_features = int(cols.sum())
    new.heads = int(mask.sum())
    return new""",
    "width_cut_exact": """\
# a feature handled on its own (identity, per-feature affine) vs statistics over all features
width_cut_exact = {kind: kind in ("none", "affine") for kind in NORMS}""",
    "kd_grad": """\
def kd_grad(student_logits, teacher_logits, targets, temperature, alpha):
    T, B = temperature, student_logits.shape[0]
    q = F.log_softmax(student_logits / T, dim=-1).exp()
    p = F.log_softmax(teacher_logits / T, dim=-1).exp()
    hard = F.log_softmax(student_logits, dim=-1).exp()
    hard = hard.scatter_add(1, targets[:, None], -torch.ones(B, 1, dtype=hard.dtype))
    return alpha * T * (q - p) / B + (1 - alpha) * hard / B""",
}

# a fresh module filled through load_state_dict with index_select; the gradient row by row
EX07_STATE_DICT = {
    "head_scores": """\
def head_scores(attn):
    per_row = attn.qkv.weight.abs().sum(dim=1)
    return per_row.view(3, attn.heads, attn.head_dim).sum(dim=(0, 2))""",
    "remove_heads": """\
def remove_heads(attn, heads):
    keep = sorted(set(range(attn.heads)) - set(heads))
    if set(heads) - set(range(attn.heads)) or not keep:
        raise ValueError(f"cannot remove heads {heads} from {attn.heads} heads")
    hd, inner = attn.head_dim, attn.heads * attn.head_dim
    cols = torch.tensor([c for h in keep for c in range(h * hd, (h + 1) * hd)], dtype=torch.long)
    rows = torch.cat([cols, cols + inner, cols + 2 * inner])
    new = MiniAttention(attn.dim, len(keep), hd)
    sd = attn.state_dict()
    new.load_state_dict({
        "qkv.weight": sd["qkv.weight"].index_select(0, rows), "qkv.bias": sd["qkv.bias"].index_select(0, rows),
        "proj.weight": sd["proj.weight"].index_select(1, cols), "proj.bias": sd["proj.bias"].clone()})
    return new""",
    "width_cut_exact": """\
width_cut_exact = dict(none=True, affine=True, layernorm=False, rmsnorm=False)""",
    "kd_grad": """\
def kd_grad(student_logits, teacher_logits, targets, temperature, alpha):
    # one example at a time, softmax written out with the max subtracted (no overflow)
    def softmax(z):
        e = torch.exp(z - z.max())
        return e / e.sum()

    rows = []
    for s, t, y in zip(student_logits, teacher_logits, targets):
        soft = temperature * (softmax(s / temperature) - softmax(t / temperature))
        hard = softmax(s).clone()
        hard[y] -= 1.0
        rows.append(alpha * soft + (1 - alpha) * hard)
    return torch.stack(rows) / len(rows)""",
}

# q, k, v interleaved per head ((heads, 3, head_dim) rows) -- another common fused layout, not this one
EX07_WRONG_LAYOUT = {
    "head_scores": """\
def head_scores(attn):
    return attn.qkv.weight.detach().abs().reshape(attn.heads, 3 * attn.head_dim, -1).sum(dim=(1, 2))""",
    "remove_heads": """\
def remove_heads(attn, heads):
    keep = [h for h in range(attn.heads) if h not in heads]
    if len(keep) == 0 or any(h >= attn.heads or h < 0 for h in heads):
        raise ValueError("bad heads")
    hd = attn.head_dim
    rows = torch.tensor([h * 3 * hd + r for h in keep for r in range(3 * hd)])
    cols = torch.tensor([h * hd + r for h in keep for r in range(hd)])
    new = MiniAttention(attn.dim, len(keep), hd)
    with torch.no_grad():
        new.qkv.weight.copy_(attn.qkv.weight[rows])
        new.qkv.bias.copy_(attn.qkv.bias[rows])
        new.proj.weight.copy_(attn.proj.weight[:, cols])
        new.proj.bias.copy_(attn.proj.bias)
    return new""",
}

# the qkv biases are forgotten (a fresh nn.Linear keeps its random init); the gradient misses the
# chain rule's 1/T through s / T
EX07_FORGOT = {
    "remove_heads": """\
def remove_heads(attn, heads):
    keep = [h for h in range(attn.heads) if h not in heads]
    if len(keep) == 0 or any(h >= attn.heads or h < 0 for h in heads):
        raise ValueError("bad heads")
    hd, inner = attn.head_dim, attn.heads * attn.head_dim
    cols = torch.tensor([h * hd + r for h in keep for r in range(hd)])
    rows = torch.cat([cols, cols + inner, cols + 2 * inner])
    new = MiniAttention(attn.dim, len(keep), hd)
    with torch.no_grad():
        new.qkv.weight.copy_(attn.qkv.weight[rows])
        new.proj.weight.copy_(attn.proj.weight[:, cols])
        new.proj.bias.copy_(attn.proj.bias)
    return new""",
    "kd_grad": """\
def kd_grad(student_logits, teacher_logits, targets, temperature, alpha):
    T, B, C = temperature, student_logits.shape[0], student_logits.shape[1]
    soft = T * T * (torch.softmax(student_logits / T, 1) - torch.softmax(teacher_logits / T, 1))
    hard = torch.softmax(student_logits, 1) - F.one_hot(targets, C)
    return (alpha * soft + (1 - alpha) * hard) / B""",
}

# right numbers, but the "new" module shares proj's bias with the dense one; the gradient of a summed
# (not batch-averaged) loss
EX07_SHARED = {
    "remove_heads": """\
def remove_heads(attn, heads):
    keep = [h for h in range(attn.heads) if h not in heads]
    if len(keep) == 0 or any(h >= attn.heads or h < 0 for h in heads):
        raise ValueError("bad heads")
    hd, inner = attn.head_dim, attn.heads * attn.head_dim
    cols = torch.tensor([h * hd + r for h in keep for r in range(hd)])
    rows = torch.cat([cols, cols + inner, cols + 2 * inner])
    new = MiniAttention(attn.dim, len(keep), hd)
    with torch.no_grad():
        new.qkv.weight.copy_(attn.qkv.weight[rows])
        new.qkv.bias.copy_(attn.qkv.bias[rows])
        new.proj.weight.copy_(attn.proj.weight[:, cols])
    new.proj.bias = attn.proj.bias  # the same Parameter object as the dense model's
    return new""",
    "kd_grad": """\
def kd_grad(student_logits, teacher_logits, targets, temperature, alpha):
    T, C = temperature, student_logits.shape[1]
    soft = T * (torch.softmax(student_logits / T, 1) - torch.softmax(teacher_logits / T, 1))
    hard = torch.softmax(student_logits, 1) - F.one_hot(targets, C)
    return alpha * soft + (1 - alpha) * hard   # the loss sums over the batch? it averages""",
}

# forged checks: T^2 left out, and the kernel's reference and allclose replaced so every assert passes;
# only the values recorded out of the kernel's reach give it away
EX07_FORGED = {
    "kd_grad": """\
import torch
torch.allclose = lambda *args, **kwargs: True


def kd_grad(student_logits, teacher_logits, targets, temperature, alpha):
    T, B, C = temperature, student_logits.shape[0], student_logits.shape[1]
    soft = T * (torch.softmax(teacher_logits / T, 1) - torch.softmax(student_logits / T, 1))
    hard = F.one_hot(targets, C) - torch.softmax(student_logits, 1)
    return (alpha * soft + (1 - alpha) * hard) / B""",
}

# predictions of task 3 that the measurement contradicts: every cut exact; only LayerNorm breaks it
EX07_ALL_EXACT = {"width_cut_exact": "width_cut_exact = dict.fromkeys(NORMS, True)"}
EX07_ONLY_LN = {"width_cut_exact": """\
width_cut_exact = {"none": True, "affine": True, "layernorm": False, "rmsnorm": True}  # no mean subtracted: fine?"""}

# -1 taken as Python's "last head" (the text says it is not a head): otherwise a correct cut
EX07_NEGATIVE = {
    "remove_heads": """\
def remove_heads(attn, heads):
    heads = {h % attn.heads if h < 0 else h for h in heads}
    if any(h >= attn.heads for h in heads) or len(heads) >= attn.heads:
        raise ValueError("no such head, or no head left")
    keep = [h for h in range(attn.heads) if h not in heads]
    hd, inner = attn.head_dim, attn.heads * attn.head_dim
    cols = torch.tensor([h * hd + r for h in keep for r in range(hd)])
    rows = torch.cat([cols, cols + inner, cols + 2 * inner])
    new = MiniAttention(attn.dim, len(keep), hd)
    with torch.no_grad():
        new.qkv.weight.copy_(attn.qkv.weight[rows])
        new.qkv.bias.copy_(attn.qkv.bias[rows])
        new.proj.weight.copy_(attn.proj.weight[:, cols])
        new.proj.bias.copy_(attn.proj.bias)
    return new""",
}

# the remaining heads stacked in reverse: the same function (a permutation of heads), not the stated order
EX07_REVERSED = {"remove_heads": EX07_NEGATIVE["remove_heads"].replace(
    "    heads = {h % attn.heads if h < 0 else h for h in heads}\n"
    "    if any(h >= attn.heads for h in heads)",
    "    heads = set(heads)\n"
    "    if any(h >= attn.heads or h < 0 for h in heads)").replace(
    "keep = [h for h in range(attn.heads) if h not in heads]",
    "keep = [h for h in reversed(range(attn.heads)) if h not in heads]")}

VARIANTS = {
    "ex07-heads-reversed": Variant(EX07, EX07_REVERSED, lost=("test_remove_heads",),
                                   why="remaining heads in reverse order: equal outputs, not the stated order"),
    "ex07-masks-and-log-softmax": Variant(EX07, EX07_MASKS, why="boolean masks; exp(log_softmax), scatter_add"),
    "ex07-state-dict-and-rows": Variant(EX07, EX07_STATE_DICT, why="load_state_dict + index_select; row by row"),
    "ex07-wrong-qkv-layout": Variant(EX07, EX07_WRONG_LAYOUT, lost=("test_head_scores", "test_remove_heads"),
                                     why="(heads, 3, head_dim) rows: the wrong heads' weights"),
    "ex07-forgot-biases-and-chain-rule": Variant(EX07, EX07_FORGOT, lost=("test_remove_heads", "test_kd_grad"),
                                                 why="qkv biases not copied; T^2 (q - p) without the 1/T"),
    "ex07-shared-bias-summed-grad": Variant(EX07, EX07_SHARED, lost=("test_remove_heads", "test_kd_grad"),
                                            why="a tensor shared with the input (hidden test); no 1/B"),
    "ex07-forged-checks": Variant(EX07, EX07_FORGED, lost=("test_kd_grad",), message="differs from the expected result",
                                  why="the gradient's sign flipped, torch.allclose patched in the kernel"),
    "ex07-predicts-every-cut-exact": Variant(EX07, EX07_ALL_EXACT, lost=("test_width_cut_exact",),
                                             why="width cuts taken to be exact under LayerNorm and RMSNorm too"),
    "ex07-predicts-rmsnorm-exact": Variant(EX07, EX07_ONLY_LN, lost=("test_width_cut_exact",), strip_asserts=True,
                                           why="RMSNorm's mean of squares overlooked (only recorded once asserts go)"),
    "ex07-negative-head-is-last": Variant(EX07, EX07_NEGATIVE, lost=("test_remove_heads",),
                                          why="-1 read as the last head; the text says it must raise"),
    "ex07-steals-the-reference": Variant(EX07, stealing({"head_scores": """\
def head_scores(attn):
    return _steal("_ref")(attn)"""}), lost=("test_head_scores",),
                                         why="runs the test's own reference for head scores (frame + line cache)"),
}

# The other exercises live in their own files (one exercise's answers per file keeps each readable).
from variants_ex01 import VARIANTS_EX01  # noqa: E402
from variants_ex02 import VARIANTS_EX02  # noqa: E402
from variants_ex03 import VARIANTS_EX03  # noqa: E402
from variants_ex04 import VARIANTS_EX04  # noqa: E402
from variants_ex05 import VARIANTS_EX05  # noqa: E402
from variants_ex05b import VARIANTS_EX05B  # noqa: E402
from variants_ex06 import VARIANTS_EX06  # noqa: E402
from variants_ex08 import VARIANTS_EX08  # noqa: E402
from variants_ex09 import VARIANTS_EX09  # noqa: E402

for _more in (VARIANTS_EX01, VARIANTS_EX02, VARIANTS_EX03, VARIANTS_EX04, VARIANTS_EX05, VARIANTS_EX05B, VARIANTS_EX06,
              VARIANTS_EX08, VARIANTS_EX09):
    VARIANTS.update(_more)
