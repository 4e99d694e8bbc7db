"""Other students' answers to exercise 9 (the design challenge); see variants.py for the idea.

The challenge task is scored by the grader's own measurement of the handed-in file, so the
wrong answers here include attacks on that measurement from inside the kernel: each makes the
kernel's test cell look green and must still get 0.
"""

from __future__ import annotations

from variants import Variant

EX09 = "ex09_design_challenge"
CHALLENGE = ("test_challenge",)

# by hand (deepcopy + slicing, as in exercises 2-6), by BN |gamma| within each layer, non-uniform
# widths that keep conv4 wider; 7,621,120 MACs; another fine-tuning seed
EX09_GAMMA_BY_HAND = {
    "design": """\
def slim_by_gamma(model, widths):
    new = copy.deepcopy(model)
    blocks = [m for m in new.features if isinstance(m, nn.Sequential)]
    prev = None
    for block, width in zip(blocks, widths):
        conv, bn = block[0], block[1]
        keep = bn.weight.detach().abs().argsort(descending=True)[:width].sort().values
        w = conv.weight.detach()[keep]
        if prev is not None:
            w = w[:, prev]
        block[0] = nn.Conv2d(w.shape[1], w.shape[0], 3, padding=1, bias=False)
        block[0].weight = nn.Parameter(w.clone())
        block[1] = nn.BatchNorm2d(width)
        for name in ("weight", "bias"):
            setattr(block[1], name, nn.Parameter(getattr(bn, name).detach()[keep].clone()))
        for name in ("running_mean", "running_var"):
            getattr(block[1], name).copy_(getattr(bn, name)[keep])
        prev = keep
    fc = new.classifier
    new.classifier = nn.Linear(len(prev), fc.out_features)
    new.classifier.weight = nn.Parameter(fc.weight.detach()[:, prev].clone())
    new.classifier.bias = nn.Parameter(fc.bias.detach().clone())
    return new.eval()


pruned = slim_by_gamma(dense, [16, 28, 56, 64])
print(count_macs(pruned, x))""",
    "repair": """\
loaders.train.generator.manual_seed(0)
recalibrate_bn(pruned, loaders.train, batches=20)
fine_tune(pruned, loaders.train, epochs=4, lr=0.03, seed=1, progress=False)
print(evaluate(pruned, loaders.val).accuracy)""",
}

NO_REPAIR = {"repair": "pass  # no repair"}

# a made-up report that would pass, for the attacks that forge the kernel's own measurement
FORGE = """\
import json
import os

import prunekit.grade as _grade
import prunekit.grade.budget as _budget
import prunekit.metrics as _metrics

_FAKE = {"valid": True, "architecture": "vgg_small", "dataset": "mnist_hard", "widths": [4, 4, 4, 4],
         "macs": 1000, "dense_macs": DENSE_MACS, "params": 10, "correct": 1000, "total": 1000}
_budget.measure = lambda *args, **kwargs: dict(_FAKE)  # the test cell imports it after this runs
_metrics.count_macs = lambda *args, **kwargs: 1000
OUTBOX = os.environ.get("PRUNEKIT_OUTBOX", "")
"""

VARIANTS_EX09 = {
    "ex09-gamma-by-hand": Variant(
        EX09, EX09_GAMMA_BY_HAND, why="own surgery by |gamma|, non-uniform widths, another seed: passes"),
    "ex09-dense-over-budget": Variant(
        EX09, {"design": "pruned = copy.deepcopy(dense)  # accurate, but every channel is still there", **NO_REPAIR},
        lost=CHALLENGE, message="over the MAC budget", why="the dense model: 89% but 36 M MACs"),
    "ex09-no-repair-under-target": Variant(
        EX09, {"design": "pruned = prunekit.prune(dense, x, ratio=0.6, importance='l1').model", **NO_REPAIR},
        lost=CHALLENGE, message="below the accuracy target", why="within budget, never repaired: near chance"),
    "ex09-prune-masks": Variant(
        EX09, {"design": """\
pruned = copy.deepcopy(dense)
for conv in [m for m in pruned.modules() if isinstance(m, nn.Conv2d)]:
    torch.nn.utils.prune.ln_structured(conv, "weight", amount=0.55, n=1, dim=0)  # hooks + masks, full width""",
               **NO_REPAIR},
        lost=CHALLENGE, message="masks", why="torch.nn.utils.prune hooks and masks instead of fewer channels"),
    "ex09-forged-measurement": Variant(
        EX09, {"design": FORGE + """\
pruned = copy.deepcopy(dense)
for name in ("verdict.json", "report.json", "pruned.pt.json"):  # a verdict of its own, for the grader to find
    if OUTBOX:
        with open(os.path.join(OUTBOX, name), "w") as f:
            json.dump({**_FAKE, "passed": True, "score": 6}, f)""", **NO_REPAIR},
        lost=CHALLENGE, message="over the MAC budget", strip_asserts=True,
        why="patched measure/count_macs and fake verdict files: the kernel is green, the file is the dense model"),
    "ex09-planted-link": Variant(
        EX09, {"design": FORGE + """\
pruned = copy.deepcopy(dense)


def _plant(path, name=None):  # hand in a link (to a grader's file) instead of a file
    if OUTBOX:
        os.symlink("/etc/passwd", os.path.join(OUTBOX, "pruned.pt"))


_grade.hand_in = _plant""", **NO_REPAIR},
        lost=CHALLENGE, message="no pruned.pt was handed in", why="a symlink in the outbox is never collected"),
    "ex09-pickled-code": Variant(
        EX09, {"design": FORGE + """\
import torch as _torch

pruned = copy.deepcopy(dense)


class _Verdict:  # unpickling this would print a passing report from inside the grader's check
    def __reduce__(self):
        return (print, ('{"valid": true, "macs": 1, "dense_macs": 2, "correct": 1, "total": 1}',))


def _evil(path, name=None):
    if OUTBOX:
        _torch.save({"format": "prunekit.pruned/1", "architecture": "vgg_small", "spec": _Verdict()},
                    os.path.join(OUTBOX, "pruned.pt"))


_grade.hand_in = _evil""", **NO_REPAIR},
        lost=CHALLENGE, message="weights_only=True", why="a pickle that would run code: loaded with weights_only"),
}
