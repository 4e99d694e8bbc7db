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


# ---------------------------------------------------------------- ex07: heads, MLP neurons, distillation
EX07 = "ex07_transformer_heads"

# deepcopy + boolean masks + fresh Parameters; KL and cross-entropy by hand from softmax and log
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
    "cut_mlp": """\
def cut_mlp(fc1, fc2, keep):
    mask = torch.zeros(fc1.out_features, dtype=torch.bool)
    mask[keep] = True
    new1, new2 = copy.deepcopy(fc1), copy.deepcopy(fc2)
    new1.weight = nn.Parameter(fc1.weight.detach()[mask].clone())
    if fc1.bias is not None:
        new1.bias = nn.Parameter(fc1.bias.detach()[mask].clone())
    new2.weight = nn.Parameter(fc2.weight.detach()[:, mask].clone())
    new1.out_features = new2.in_features = int(mask.sum())
    return new1, new2""",
    "kd_loss": """\
def kd_loss(student_logits, teacher_logits, targets, temperature, alpha):
    T = temperature
    p = torch.softmax(teacher_logits / T, dim=-1)
    q = torch.softmax(student_logits / T, dim=-1)
    kl = (p * (torch.log(p) - torch.log(q))).sum() / student_logits.shape[0]
    nll = -torch.log(torch.softmax(student_logits, dim=-1))[torch.arange(len(targets)), targets].mean()
    return alpha * T ** 2 * kl + (1 - alpha) * nll""",
}

# a fresh module filled through load_state_dict with index_select; F.kl_div on probabilities
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
    "cut_mlp": """\
def cut_mlp(fc1, fc2, keep):
    new1 = nn.Linear(fc1.in_features, keep.numel(), bias=fc1.bias is not None)
    new2 = nn.Linear(keep.numel(), fc2.out_features, bias=fc2.bias is not None)
    sd1 = {"weight": fc1.weight.detach().index_select(0, keep)}
    if fc1.bias is not None:
        sd1["bias"] = fc1.bias.detach().index_select(0, keep)
    sd2 = {"weight": fc2.weight.detach().index_select(1, keep)}
    if fc2.bias is not None:
        sd2["bias"] = fc2.bias.detach().clone()
    new1.load_state_dict(sd1)
    new2.load_state_dict(sd2)
    return new1, new2""",
    "kd_loss": """\
def kd_loss(student_logits, teacher_logits, targets, temperature, alpha):
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=1),
                    F.softmax(teacher_logits / temperature, dim=1), reduction="batchmean")
    hard = F.nll_loss(F.log_softmax(student_logits, dim=1), targets)
    return alpha * temperature ** 2 * soft + (1 - alpha) * hard""",
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

# the biases are forgotten (fresh nn.Linear keeps its random init) and T^2 is left out
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
    "cut_mlp": """\
def cut_mlp(fc1, fc2, keep):
    new1 = nn.Linear(fc1.in_features, len(keep), bias=fc1.bias is not None)
    new2 = nn.Linear(len(keep), fc2.out_features, bias=fc2.bias is not None)
    with torch.no_grad():
        new1.weight.copy_(fc1.weight[keep])
        new2.weight.copy_(fc2.weight[:, keep])
        if fc2.bias is not None:
            new2.bias.copy_(fc2.bias)
    return new1, new2""",
    "kd_loss": """\
def kd_loss(student_logits, teacher_logits, targets, temperature, alpha):
    log_q = F.log_softmax(student_logits / temperature, dim=1)
    log_p = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()
    return alpha * kl + (1 - alpha) * F.cross_entropy(student_logits, targets)""",
}

# right numbers, but the "new" module shares proj's bias with the dense one; KL with reduction="mean"
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
    "kd_loss": """\
def kd_loss(student_logits, teacher_logits, targets, temperature, alpha):
    T = temperature
    soft = F.kl_div(F.log_softmax(student_logits / T, dim=1), F.log_softmax(teacher_logits / T, dim=1),
                    reduction="mean", log_target=True)
    return alpha * T * T * soft + (1 - alpha) * F.cross_entropy(student_logits, targets)""",
}

# forged checks: T^2 left out, and the kernel's reference and allclose replaced so every assert passes;
# only the values recorded out of the kernel's reach give it away
EX07_FORGED = {
    "kd_loss": """\
import torch
torch.allclose = lambda *args, **kwargs: True


def kd_loss(student_logits, teacher_logits, targets, temperature, alpha):
    log_q = F.log_softmax(student_logits / temperature, dim=1)
    log_p = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()
    return alpha * kl + (1 - alpha) * F.cross_entropy(student_logits, targets)


distillation_loss = kd_loss""",
}

VARIANTS = {
    "ex07-masks-and-hand-kl": Variant(EX07, EX07_MASKS, why="deepcopy + boolean masks, KL by hand"),
    "ex07-state-dict-and-kl-div": Variant(EX07, EX07_STATE_DICT, why="load_state_dict + index_select, F.kl_div"),
    "ex07-wrong-qkv-layout": Variant(EX07, EX07_WRONG_LAYOUT, lost=("test_head_scores", "test_remove_heads"),
                                     why="(heads, 3, head_dim) rows: the wrong heads' weights"),
    "ex07-forgot-biases-and-t2": Variant(EX07, EX07_FORGOT, lost=("test_remove_heads", "test_cut_mlp", "test_kd_loss"),
                                         why="qkv / fc1 biases not copied, no T^2"),
    "ex07-shared-bias-mean-kl": Variant(EX07, EX07_SHARED, lost=("test_remove_heads", "test_kd_loss"),
                                        why="a tensor shared with the input (hidden test), reduction='mean'"),
    "ex07-forged-checks": Variant(EX07, EX07_FORGED, lost=("test_kd_loss",), message="differs from the expected result",
                                  why="torch.allclose and distillation_loss patched in the kernel"),
}

# The other exercises live in their own files (one exercise's answers per file keeps each readable).
from variants_ex01 import VARIANTS_EX01  # noqa: E402
from variants_ex02 import VARIANTS_EX02  # noqa: E402
from variants_ex03 import VARIANTS_EX03  # noqa: E402
from variants_ex04 import VARIANTS_EX04  # noqa: E402
from variants_ex05 import VARIANTS_EX05  # noqa: E402
from variants_ex06 import VARIANTS_EX06  # noqa: E402
from variants_ex08 import VARIANTS_EX08  # noqa: E402
from variants_ex09 import VARIANTS_EX09  # noqa: E402
from variants_ex10 import VARIANTS_EX10  # noqa: E402

for _more in (VARIANTS_EX01, VARIANTS_EX02, VARIANTS_EX03, VARIANTS_EX04, VARIANTS_EX05, VARIANTS_EX06, VARIANTS_EX08,
              VARIANTS_EX09, VARIANTS_EX10):
    VARIANTS.update(_more)
