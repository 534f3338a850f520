"""Model registry, shapes, the GJS PreAct ResNet-34 and local pretrained checkpoints."""
from __future__ import annotations

import os

import pytest
import torch
import torchvision

from lci.errors import CheckpointError, ConfigError
from lci.models import MODELS, PreActBlock, count_parameters, create_model


@pytest.mark.parametrize(
    "name, in_channels, image_size",
    [
        ("small_cnn", 1, 8),
        ("small_cnn", 3, 32),
        ("preact_resnet34", 3, 32),
        ("resnet18", 3, 32),
        ("resnet18", 1, 16),
        ("resnet34", 3, 32),
        ("resnet50", 3, 32),
        ("resnet18", 3, 96),  # ImageNet stem
        ("resnet18", 1, 96),  # ImageNet stem, conv1 replaced
    ],
)
def test_output_shape(name, in_channels, image_size):
    torch.manual_seed(0)
    model = create_model(name, 7, in_channels=in_channels, image_size=image_size).eval()
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, image_size, image_size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_every_registered_model_is_tested():
    assert set(MODELS.names()) == {"small_cnn", "preact_resnet34", "resnet18", "resnet34", "resnet50"}


def test_small_cnn_has_batchnorm():
    model = create_model("small_cnn", 10, in_channels=1, image_size=8)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_preact_resnet34_matches_spec():
    model = create_model("preact_resnet34", 10)
    n = count_parameters(model)
    assert 1.7e6 <= n <= 2.1e6, n
    assert [len(model.layer1), len(model.layer2), len(model.layer3)] == [5, 5, 5]
    assert all(isinstance(b, PreActBlock) for layer in (model.layer1, model.layer2, model.layer3)
               for b in layer)
    assert model.conv1.out_channels == 32 and model.conv1.kernel_size == (3, 3)
    assert [layer[-1].conv2.out_channels for layer in (model.layer1, model.layer2, model.layer3)] \
        == [32, 64, 128]
    # 1x1 shortcuts exactly where the shape changes
    shortcuts = [b.shortcut for layer in (model.layer1, model.layer2, model.layer3) for b in layer]
    assert [s is not None for s in shortcuts] == [False] * 5 + ([True] + [False] * 4) * 2
    assert all(s.kernel_size == (1, 1) for s in shortcuts if s is not None)
    assert model.fc.in_features == 128


def test_small_image_resnet_uses_cifar_stem():
    model = create_model("resnet18", 10, image_size=32)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)
    big = create_model("resnet18", 10, image_size=224)
    assert big.conv1.kernel_size == (7, 7)


def test_unknown_name_lists_known_models():
    with pytest.raises(ConfigError) as err:
        create_model("resnet1000", 10)
    for name in ("small_cnn", "preact_resnet34", "resnet18", "resnet50"):
        assert name in str(err.value)


def test_bad_num_classes():
    with pytest.raises(ConfigError):
        create_model("small_cnn", 0)


# ----------------------------------------------------------------------------------------------
# weight init (init_scheme)


def _convs(model):
    """(fan_in, fan_out, weight) of every conv with enough weights for a tight std estimate."""
    out = []
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d) and m.weight.numel() >= 9000:
            k = m.weight[0, 0].numel()
            out.append((m.in_channels * k, m.out_channels * k, m.weight.detach()))
    return out


def _is_torch_default(model) -> bool:
    """PyTorch's Conv2d default: uniform(±1/sqrt(fan_in)), std 1/sqrt(3·fan_in)."""
    convs = _convs(model)
    return bool(convs) and all(
        w.abs().max() <= fan_in ** -0.5 and abs(w.std() / (3 * fan_in) ** -0.5 - 1) < 0.05
        for fan_in, _, w in convs)


def _is_kaiming_fan_out(model) -> bool:
    convs = _convs(model)
    return bool(convs) and all(abs(w.std() / (2 / fan_out) ** 0.5 - 1) < 0.05
                               for _, fan_out, w in convs)


def test_gjs_network_keeps_pytorch_default_init():
    """GJS's models/preact_resnet.py has no init code: a 64-channel 3x3 conv has weight std
    1/sqrt(3·576) = 0.024 (kaiming fan_out would give sqrt(2/576) = 0.059)."""
    torch.manual_seed(0)
    model = create_model("preact_resnet34", 10)
    assert _is_torch_default(model) and not _is_kaiming_fan_out(model)
    w = model.layer2[1].conv1.weight
    assert w.shape[:2] == (64, 64) and w.std().item() == pytest.approx(0.024, abs=0.001)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.equal(b.weight, torch.ones_like(b.weight)) and not b.bias.any() for b in bns)
    fc_bound = model.fc.in_features ** -0.5  # nn.Linear's default
    assert model.fc.weight.abs().max() <= fc_bound and model.fc.weight.std() > fc_bound / 2


def test_kaiming_stays_an_option_and_is_the_native_init_elsewhere():
    torch.manual_seed(0)
    kaiming = create_model("preact_resnet34", 10, init_scheme="kaiming")
    assert _is_kaiming_fan_out(kaiming) and not _is_torch_default(kaiming)
    assert kaiming.layer2[1].conv1.weight.std().item() == pytest.approx(0.059, abs=0.002)
    cnn = create_model("small_cnn", 10, in_channels=1, image_size=8)  # digits' calibration
    assert _is_kaiming_fan_out(cnn)
    assert _is_torch_default(create_model("small_cnn", 10, in_channels=1, image_size=8,
                                          init_scheme="torch"))
    assert _is_torch_default(create_model("resnet18", 10, image_size=32, init_scheme="torch"))
    assert _is_kaiming_fan_out(create_model("resnet18", 10, image_size=32))  # torchvision's own


def test_init_scheme_resolves_per_model_and_reaches_the_trainer():
    from lci.config import TrainConfig
    from lci.trainer import Trainer

    assert TrainConfig(dataset="cifar10").resolved().init_scheme == "torch"
    assert TrainConfig(dataset="cifar100").resolved().init_scheme == "torch"
    assert TrainConfig(dataset="digits").resolved().init_scheme == "kaiming"
    assert TrainConfig(dataset="cifar10", init_scheme="kaiming").resolved().init_scheme == "kaiming"
    with pytest.raises(ConfigError, match="init_scheme 'xavier'.*'auto', 'torch', 'kaiming'"):
        TrainConfig(init_scheme="xavier")
    tr = Trainer(TrainConfig(dataset="digits", epochs=1, device="cpu", init_scheme="torch"))
    assert _is_torch_default(tr.engine.theta)
    assert tr.cfg.init_scheme == "torch"


# ----------------------------------------------------------------------------------------------
# pretrained


@pytest.fixture(scope="module")
def imagenet_resnet18_state():
    torch.manual_seed(1)
    return torchvision.models.resnet18(weights=None, num_classes=1000).state_dict()


def test_pretrained_loads_backbone_and_keeps_new_head(tmp_path, imagenet_resnet18_state):
    path = tmp_path / "r18.pth"
    torch.save(imagenet_resnet18_state, path)
    model = create_model("resnet18", 14, image_size=224, pretrained=str(path))
    sd = model.state_dict()
    assert torch.equal(sd["layer1.0.conv1.weight"], imagenet_resnet18_state["layer1.0.conv1.weight"])
    assert torch.equal(sd["conv1.weight"], imagenet_resnet18_state["conv1.weight"])
    assert torch.equal(sd["bn1.running_var"], imagenet_resnet18_state["bn1.running_var"])
    assert model.fc.out_features == 14 and sd["fc.weight"].shape == (14, 512)


@pytest.mark.parametrize("wrapper", ["module", "module+state_dict", "backbone+model"])
def test_pretrained_strips_prefixes_and_unwraps(tmp_path, imagenet_resnet18_state, wrapper):
    prefix = "backbone." if wrapper.startswith("backbone") else "module."
    state = {prefix + k: v for k, v in imagenet_resnet18_state.items()}
    obj = state
    if "+" in wrapper:
        obj = {wrapper.split("+")[1]: state, "epoch": 90}
    path = tmp_path / "wrapped.pth"
    torch.save(obj, path)
    model = create_model("resnet18", 14, image_size=224, pretrained=str(path))
    assert torch.equal(model.state_dict()["layer4.1.bn2.weight"],
                       imagenet_resnet18_state["layer4.1.bn2.weight"])


def test_pretrained_same_head_is_loaded(tmp_path):
    torch.manual_seed(2)
    src = create_model("small_cnn", 10, in_channels=1, image_size=8)
    path = tmp_path / "small.pt"
    torch.save({"model_state": src.state_dict()}, path)
    model = create_model("small_cnn", 10, in_channels=1, image_size=8, pretrained=str(path))
    for k, v in src.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_pretrained_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.pth"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="corrupt.pth"):
        create_model("resnet18", 14, image_size=224, pretrained=str(path))


def test_pretrained_missing_file(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError, match="nope.pth"):
        create_model("resnet18", 14, image_size=224, pretrained=str(path))


def test_pretrained_wrong_architecture(tmp_path):
    path = tmp_path / "small.pt"
    torch.save(create_model("small_cnn", 10).state_dict(), path)
    with pytest.raises(CheckpointError, match="small.pt"):
        create_model("resnet18", 14, image_size=224, pretrained=str(path))


def test_pretrained_no_state_dict(tmp_path):
    path = tmp_path / "junk.pt"
    torch.save({"epoch": 3, "note": "no tensors"}, path)
    with pytest.raises(CheckpointError, match="junk.pt"):
        create_model("resnet18", 14, image_size=224, pretrained=str(path))


def test_pretrained_imagenet_into_cifar_stem_warns(tmp_path, imagenet_resnet18_state):
    # conv1 is 7x7 in the file and 3x3 in the small-image model: skipped, with a warning.
    path = tmp_path / "r18.pth"
    torch.save(imagenet_resnet18_state, path)
    with pytest.warns(UserWarning, match="conv1.weight"):
        model = create_model("resnet18", 10, image_size=32, pretrained=str(path))
    assert torch.equal(model.state_dict()["layer2.0.conv1.weight"],
                       imagenet_resnet18_state["layer2.0.conv1.weight"])
