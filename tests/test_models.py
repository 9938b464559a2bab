import pytest
import torch
from safetensors.torch import load_file

from cifar_models.models import build_model, count_params, list_models
from conftest import IMAGENET_WEIGHTS


def test_registry_lists_the_shipped_models_and_rejects_unknown():
    assert list_models() == ["cnn9", "efficientnet_b0"]
    with pytest.raises(KeyError, match="unknown model"):
        build_model("resnet50")


@pytest.mark.parametrize("name,size", [("cnn9", 32), ("efficientnet_b0", 224)])
def test_models_give_100_logits(name, size):
    model, pretrained = build_model(name)
    assert pretrained is None
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, size, size)).shape == (2, 100)


def test_cnn9_has_nine_weight_layers_and_scales_with_width():
    model, _ = build_model("cnn9")
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == 9
    small, _ = build_model("cnn9", dict(widths=[32, 64, 128, 256]))
    assert count_params(small) < count_params(model) / 3


@pytest.mark.skipif(not IMAGENET_WEIGHTS.exists(), reason="ImageNet weights not present")
def test_efficientnet_starts_from_local_imagenet_file_and_says_so():
    model, pretrained = build_model("efficientnet_b0", pretrained=str(IMAGENET_WEIGHTS))
    ref = load_file(str(IMAGENET_WEIGHTS))
    assert torch.equal(model.state_dict()["conv_stem.weight"], ref["conv_stem.weight"])
    assert model.get_classifier().out_features == 100
    assert pretrained["source"] == "file" and pretrained["sha256"].startswith("e563f67c")
