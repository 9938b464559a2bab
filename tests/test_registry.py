"""A model is one registry entry: a toy model registered here trains, saves and is served without any
other file knowing it; any timm architecture trains by name."""
import pytest
import torch
from PIL import Image
from torch import nn

from cifar_models import load_classifier
from cifar_models.common.meta import title
from cifar_models.dashboard.catalog import agreement_line
from cifar_models.serve.batching import compare
from cifar_models.data import CIFAR100_MEAN, CIFAR100_STD
from cifar_models.models import (ModelEntry, build_model, count_params, get_entry, list_models, model_stages, register,
                                 unregister)
from cifar_models.train.recipes import get_recipe
from cifar_models.train.loop import train


class Toy(nn.Module):
    def __init__(self, num_classes=100, width=8):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.fc = nn.Linear(width, num_classes)

    def forward_features(self, x):
        return self.body(x)

    def forward_head(self, x, pre_logits=False):
        x = x.mean((2, 3))
        return x if pre_logits else self.fc(x)

    def get_classifier(self):
        return self.fc

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


@pytest.fixture
def toy():
    entry = register(ModelEntry(
        name="toy_test_model", build=lambda num_classes=100, pretrained=None, width=8: (Toy(num_classes, width), None),
        data_config=dict(input_size=32, interpolation="bilinear", mean=CIFAR100_MEAN, std=CIFAR100_STD),
        title="Toy · registered by a test", description="a toy", color="#123456",
        recipes={"default": dict(arch=dict(width=8), epochs=1, batch_size=100, lr=0.1, amp=False, device="cpu",
                                 val_per_class=2)}))
    yield entry
    unregister(entry.name)
    assert "toy_test_model" not in list_models()


def test_a_toy_model_registered_in_a_test_trains_saves_and_is_served(toy, cifar_fixture, tmp_path):
    cfg = get_recipe("toy_test_model")
    meta = train(cfg, data_dir=cifar_fixture, out_dir=tmp_path / "ck", run_dir=tmp_path / "runs", verify_md5=False)
    assert meta["model"] == "toy_test_model" and len(meta["history"]) == 1
    models = {"toy_test_model": load_classifier(tmp_path / "ck" / "toy_test_model")}
    result = compare(models, Image.new("RGB", (50, 40), (200, 30, 30)))
    top = result["toy_test_model"]["top"]
    assert len(top) == 5 and result["agree"] is True
    assert title(models["toy_test_model"]) == "Toy · registered by a test"
    assert "toy says" not in agreement_line(result, models) and "**" in agreement_line(result, models)
    # the default stages of a timm-style network: the pooled features, then the classifier
    stages = model_stages("toy_test_model", models["toy_test_model"].model)
    x = torch.randn(2, 3, 32, 32)
    y = x
    for s in stages:
        y = s(y)
    assert torch.allclose(y, models["toy_test_model"].model(x), atol=1e-6)


def test_unknown_names_say_what_exists():
    with pytest.raises(KeyError, match="timm:"):
        get_entry("resnet50")
    with pytest.raises(KeyError, match="no architecture"):
        get_entry("timm:not_a_real_architecture")


@pytest.mark.parametrize("name", ["cnn9", "efficientnet_b0"])
def test_stages_compose_to_the_network(name):
    from cifar_models.models import build_model

    torch.manual_seed(0)
    model, _ = build_model(name)
    model.eval()
    size = get_entry(name).data_config["input_size"] if name == "cnn9" else 64
    x = torch.randn(2, 3, size, size)
    y = x
    with torch.no_grad():
        for s in model_stages(name, model):
            y = s(y)
        assert torch.allclose(y, model(x), atol=1e-5)


def test_any_timm_architecture_trains_by_name_with_its_own_input_config(cifar_fixture, tmp_path):
    entry = get_entry("timm:test_efficientnet")
    assert entry.data_config["input_size"] == 160 and entry.data_config["interpolation"] == "bicubic"
    cfg = get_recipe("timm:test_efficientnet", "cpu")  # frozen body, classifier on cached features
    cfg.update(pretrained=None, input_size=32, epochs=1, batch_size=100, val_per_class=2, amp=False, device="cpu")
    meta = train(cfg, data_dir=cifar_fixture, out_dir=tmp_path / "ck", run_dir=tmp_path / "runs", verify_md5=False)
    assert meta["data_config"]["input_size"] == 32 and meta["feature_extraction_seconds"] > 0
    clf = load_classifier(tmp_path / "ck" / "timm:test_efficientnet")
    (top,) = clf.predict([Image.new("RGB", (20, 20), (0, 90, 200))])
    assert len(top) == 5


@pytest.mark.parametrize("model", list_models())
def test_every_recipe_ships_fp16_weights_under_10_mb(model):
    """Shipped weights stay fp16 safetensors under 10 MB each: every named recipe's network must fit."""
    for recipe in get_entry(model).recipes:
        cfg = get_recipe(model, recipe)
        net, _ = build_model(model, cfg["arch"], pretrained=None)
        assert 2 * count_params(net) < 10e6, (model, recipe, count_params(net))
