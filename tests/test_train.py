"""Training: determinism, exact evaluation counts, BN recalibration, the slimming penalty."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from prunekit import data, train as T
from prunekit.models import build_model


@pytest.fixture(scope="module")
def digits():
    return data.make_loaders("digits", batch_size=64, seed=0)


def _fresh_vgg(seed: int = 0) -> nn.Module:
    T.set_seed(seed)
    return build_model("vgg_small")


@pytest.fixture(scope="module")
def trained(digits):
    """VGG trained one epoch on digits, and its test result."""
    torch.set_num_threads(1)
    model = _fresh_vgg()
    T.train(model, digits.train, epochs=1, lr=0.05, seed=0, progress=False)
    return model, T.evaluate(model, digits.test)


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_same_seed_gives_identical_weights(digits, trained):
    model, _ = trained
    again = _fresh_vgg()
    # the same loader object, already iterated by the fixture: train() must reseed its shuffle
    T.train(again, digits.train, epochs=1, lr=0.05, seed=0, progress=False)
    assert _same_weights(model, again)


def test_different_seed_gives_different_weights(digits, trained):
    model, _ = trained
    other = _fresh_vgg()  # same initial weights, different batch order
    T.train(other, digits.train, epochs=1, lr=0.05, seed=1, progress=False)
    assert not _same_weights(model, other)


def test_one_epoch_learns_digits(trained):
    _, result = trained
    assert result.total == 360 and result.accuracy > 0.5  # chance is 0.1


def test_history_has_one_record_per_epoch(digits):
    model = _fresh_vgg()
    hist = T.fine_tune(model, digits.train, epochs=2, lr=0.01, val_loader=digits.val, progress=False)
    assert [h["epoch"] for h in hist] == [1, 2]
    assert set(hist[0]) == {"epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc"}
    assert hist[0]["lr"] == 0.01 and hist[1]["lr"] == pytest.approx(0.005)  # cosine: half-way
    assert not model.training


class _Constant(nn.Module):
    """Always predicts uniform logits with a slight preference for class 3."""

    def forward(self, x):
        logits = torch.zeros(len(x), 10)
        logits[:, 3] = 1e-6
        return logits


def test_evaluate_counts_exactly():
    y = torch.tensor([3, 3, 1, 0, 3, 9, 3])
    loader = DataLoader(TensorDataset(torch.zeros(7, 1), y), batch_size=3)
    result = T.evaluate(_Constant(), loader)
    assert (result.correct, result.total) == (4, 7)
    assert result.accuracy == 4 / 7
    assert result.loss == pytest.approx(math.log(10), abs=1e-5)  # uniform over 10 classes


def test_evaluate_restores_the_mode_and_refuses_empty_loaders(trained):
    model, _ = trained
    model.train()
    T.evaluate(model, [(torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long))])
    assert model.training
    model.eval()
    with pytest.raises(ValueError, match="empty loader"):
        T.evaluate(model, [])


def test_recalibrate_bn_measures_the_data_statistics():
    torch.manual_seed(0)
    x = torch.randn(40, 3, 5, 5) * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1) + 4.0
    model = nn.Sequential(nn.BatchNorm2d(3, momentum=0.3))
    loader = DataLoader(TensorDataset(x, torch.zeros(40)), batch_size=10)
    T.recalibrate_bn(model, loader, batches=4)
    bn = model[0]
    # momentum=None makes the running mean the exact average over all four batches
    torch.testing.assert_close(bn.running_mean, x.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(bn.running_var, x.var(dim=(0, 2, 3)), rtol=0.05, atol=0)
    assert bn.momentum == 0.3 and not model.training  # settings restored, eval mode


def test_recalibrate_bn_repairs_corrupted_statistics(digits, trained):
    model, before = trained
    model = _clone(model, digits)
    weights = {k: v.clone() for k, v in model.named_parameters()}
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # what stale statistics after pruning look like
            m.running_mean.add_(3.0)
            m.running_var.mul_(20.0)
    broken = T.evaluate(model, digits.test)
    T.recalibrate_bn(model, digits.train, batches=10)
    repaired = T.evaluate(model, digits.test)
    assert broken.accuracy < before.accuracy - 0.2
    assert repaired.accuracy >= before.accuracy - 0.05
    assert all(torch.equal(v, weights[k]) for k, v in model.named_parameters())  # no weight changed


def _clone(model: nn.Module, digits) -> nn.Module:
    copy = _fresh_vgg()
    copy.load_state_dict(model.state_dict())
    return copy.eval()


def test_bn_l1_penalty_is_the_sum_of_absolute_gammas():
    model = _fresh_vgg()
    gammas = [m.weight for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for i, g in enumerate(gammas):
        nn.init.constant_(g, -0.5 if i % 2 else 0.25)
    expected = sum(g.numel() * abs(float(g[0].detach())) for g in gammas)
    penalty = T.bn_l1_penalty(model)
    assert penalty.item() == pytest.approx(expected)
    penalty.backward()  # subgradient of |gamma| is sign(gamma)
    assert torch.equal(gammas[1].grad, -torch.ones_like(gammas[1]))
    with pytest.raises(ValueError, match="no BatchNorm2d"):
        T.bn_l1_penalty(nn.Linear(2, 2))


def test_extra_loss_hook_is_added_every_step_and_shrinks_gammas(digits):
    plain, slim = _fresh_vgg(), _fresh_vgg()
    calls = []

    def slimming(m: nn.Module) -> torch.Tensor:
        calls.append(m)
        return 0.2 * T.bn_l1_penalty(m)

    T.train(plain, digits.train, epochs=1, lr=0.05, seed=0, progress=False)
    T.train(slim, digits.train, epochs=1, lr=0.05, seed=0, progress=False, extra_loss=slimming)
    assert len(calls) == len(digits.train) and all(m is slim for m in calls)
    assert T.bn_l1_penalty(slim).item() < 0.7 * T.bn_l1_penalty(plain).item()


def test_progress_can_be_switched_off(monkeypatch, capsys, digits):
    assert T.progress_enabled(True)
    assert not T.progress_enabled(False)
    monkeypatch.setenv("PRUNEKIT_PROGRESS", "0")
    assert not T.progress_enabled(True)
    T.train(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), digits.train, epochs=1, progress=True)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_progress_bar_is_drawn_by_default(monkeypatch, capsys, digits):
    monkeypatch.delenv("PRUNEKIT_PROGRESS", raising=False)
    T.train(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), digits.train, epochs=1, progress=True)
    assert "epoch 1/1" in capsys.readouterr().err


def test_distillation_loss_by_hand():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    y = torch.tensor([0, 1, 2, 3, 0])
    temp, alpha = 3.0, 0.7
    p_t = torch.softmax(t / temp, 1)
    kl = (p_t * (p_t.log() - torch.log_softmax(s / temp, 1))).sum(1).mean()
    want = alpha * temp ** 2 * kl + (1 - alpha) * nn.functional.cross_entropy(s, y)
    torch.testing.assert_close(T.distillation_loss(s, t, y, temp, alpha), want)
    assert float(T.distillation_loss(t, t, y, temp, 1.0)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        T.distillation_loss(s, t, y, temperature=0.0)


def test_distill_moves_the_student_towards_the_teacher_and_leaves_the_teacher(digits, trained):
    teacher, _ = trained
    teacher.train()                                   # its mode must come back as it was
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = _fresh_vgg(seed=1)

    def gap() -> float:
        with torch.no_grad():
            x = next(iter(digits.test))[0]
            teacher.eval()
            t = torch.softmax(teacher(x) / 4, 1)
            teacher.train()
            return float((torch.softmax(student.eval()(x) / 4, 1) - t).abs().sum(1).mean())

    start = gap()
    T.distill(student, teacher, digits.train, epochs=1, lr=0.05, seed=0, progress=False)
    assert gap() < 0.6 * start
    assert teacher.training and all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())


def test_adamw_and_unknown_optimizer(digits):
    model = _fresh_vgg()
    T.train(model, digits.train, epochs=1, lr=1e-3, optimizer="adamw", progress=False)
    assert T.evaluate(model, digits.test).accuracy > 0.25           # chance: 0.10
    with pytest.raises(ValueError, match="optimizer"):
        T.train(model, digits.train, epochs=1, optimizer="lion", progress=False)


def test_random_shift_moves_each_image_and_is_seeded():
    x = torch.zeros(8, 1, 10, 10)
    x[:, :, 4:6, 4:6] = 1.0                               # a 2x2 square in the middle
    torch.manual_seed(0)
    a = T.random_shift(x, 2)
    torch.manual_seed(0)
    assert torch.equal(a, T.random_shift(x, 2))           # same seed, same shifts
    assert a.shape == x.shape and torch.equal(T.random_shift(x, 0), x)
    for img in a:                                         # the square moved, by <= 2 pixels
        rows, cols = torch.nonzero(img[0], as_tuple=True)
        assert len(rows) == 4 and 2 <= int(rows.min()) <= 6 and 2 <= int(cols.min()) <= 6
    assert len({tuple(torch.nonzero(img[0])[0].tolist()) for img in a}) > 1   # per image


def test_train_applies_augment_to_every_batch(digits):
    seen = []

    def augment(x):
        seen.append(len(x))
        return x

    T.train(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), digits.train, epochs=1, augment=augment,
            progress=False)
    assert len(seen) == len(digits.train)
