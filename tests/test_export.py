"""prunekit.export: a pruned model survives saving and reloading, bit for bit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.export import (architecture_spec, export_program, load_program, load_pruned,
                             save_pruned)
from prunekit.models import build_model
from prunekit.testing import randomise


def _cut_first_block(model: nn.Module, keep: list[int]) -> nn.Module:
    """Hand-made channel pruning of SmallVGG's first conv-BN pair (and the next conv's inputs)."""
    idx = torch.tensor(keep)
    conv, bn, nxt = model.features[0][0], model.features[0][1], model.features[1][0]
    new_conv = nn.Conv2d(conv.in_channels, len(keep), 3, padding=1, bias=False)
    new_bn = nn.BatchNorm2d(len(keep))
    new_next = nn.Conv2d(len(keep), nxt.out_channels, 3, padding=1, bias=False)
    with torch.no_grad():
        new_conv.weight.copy_(conv.weight[idx])
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(new_bn, name).copy_(getattr(bn, name)[idx])
        new_next.weight.copy_(nxt.weight[:, idx])
    model.features[0][0], model.features[0][1], model.features[1][0] = new_conv, new_bn, new_next
    return model


@pytest.fixture
def pruned_vgg():
    torch.manual_seed(0)
    model = randomise(build_model("vgg_small"))  # random BN statistics: a lost buffer shows
    return _cut_first_block(model, keep=[0, 3, 4, 9, 17, 30]).eval()


def test_plain_state_dict_does_not_fit_the_default_class(pruned_vgg):
    with pytest.raises(RuntimeError, match="size mismatch"):
        build_model("vgg_small").load_state_dict(pruned_vgg.state_dict())


def test_save_and_reload_pruned_model_gives_identical_outputs(pruned_vgg, tmp_path):
    path = save_pruned(pruned_vgg, tmp_path / "vgg_pruned.pt", "vgg_small",
                       removed={"features.0.0": [1, 2, 5]}, metadata={"ratio": 0.8})
    raw = torch.load(path, weights_only=True)  # only tensors and plain values inside
    assert raw["removed"] == {"features.0.0": [1, 2, 5]} and raw["metadata"] == {"ratio": 0.8}
    model = load_pruned(path)
    assert not model.training
    assert model.features[0][0].out_channels == 6 and model.features[1][0].in_channels == 6
    assert architecture_spec(model) == architecture_spec(pruned_vgg)
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), pruned_vgg(x))


def test_load_with_own_builder_and_reject_foreign_files(pruned_vgg, tmp_path):
    path = save_pruned(pruned_vgg, tmp_path / "p.pt", "my_vgg")
    with pytest.raises(ValueError, match="unknown model 'my_vgg'"):
        load_pruned(path)
    model = load_pruned(path, builder=lambda in_channels, num_classes:
                        build_model("vgg_small", in_channels, num_classes))
    assert model.features[0][1].num_features == 6
    torch.save(pruned_vgg.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not a prunekit pruned-model file"):
        load_pruned(tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="different architecture"):
        save_pruned(pruned_vgg, tmp_path / "wrong.pt", "resnet8")
        load_pruned(tmp_path / "wrong.pt")


def test_exported_program_reloads_without_the_class_and_keeps_a_dynamic_batch(pruned_vgg, tmp_path):
    x = torch.randn(2, 1, 28, 28)
    path = export_program(pruned_vgg, x, tmp_path / "vgg.pt2")
    program = load_program(path)
    for batch in (1, 2, 5):
        xb = torch.randn(batch, 1, 28, 28)
        with torch.no_grad():
            assert torch.allclose(program(xb), pruned_vgg(xb), atol=1e-5)


@pytest.mark.parametrize("name", ["resnet8", "mobilenetv2_small"])
def test_engine_pruned_residual_and_depthwise_models_round_trip(name, tmp_path):
    """Coupled groups (residual adds) and depthwise convs (groups shrink with the channels)."""
    import prunekit

    torch.manual_seed(0)
    model = build_model(name).eval()
    result = prunekit.prune(model, torch.zeros(1, 1, 28, 28), ratio=0.5)
    path = save_pruned(result.model, tmp_path / f"{name}.pt", name, removed=result.removed)
    reloaded = load_pruned(path)
    assert architecture_spec(reloaded) == architecture_spec(result.model)
    if name == "mobilenetv2_small":
        dw = reloaded.features[2].block[1][0]
        assert dw.groups == dw.in_channels == dw.out_channels < 64
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(reloaded(x), result.model(x))


def test_exported_program_stores_a_compact_example_not_the_tensor_behind_a_view(pruned_vgg, tmp_path):
    """A 2-image slice of a 500-image batch is a view; torch.save of a view writes the whole
    storage behind it (1.57 MB for a batch of MNIST digits). export_program stores a copy."""
    import zipfile

    batch = torch.randn(500, 1, 28, 28)
    path = export_program(pruned_vgg, batch[:2], tmp_path / "vgg.pt2")
    sizes = {info.filename.split("/", 1)[1]: info.file_size
             for info in zipfile.ZipFile(path).infolist()}
    weights = sum(v for k, v in sizes.items() if k.startswith("data/weights/weight_"))
    sample = sum(v for k, v in sizes.items() if k.startswith("data/sample_inputs/"))
    tensors = {id(t): t for t in (*pruned_vgg.parameters(), *pruned_vgg.buffers())}
    assert weights == sum(t.numel() * t.element_size() for t in tensors.values())
    assert sample < 2 * 2 * 28 * 28 * 4 + 2_000            # two images, not 500
    assert path.stat().st_size < weights + sample + 100_000   # + the graph, as JSON
