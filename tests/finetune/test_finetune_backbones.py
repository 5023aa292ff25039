"""Backbones: offline Lite0 ImageNet weights, local weight files, the offline imagenet error, freezing."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from tasks.core.errors import FacesetError
from tasks.vision import backbones
from tasks.finetune.data import eval_transform


def _lite0_imagenet() -> torch.nn.Module:
    """timm's Lite0 with the shipped weights and its original 1000-class ImageNet classifier."""
    model = timm.create_model(backbones.LITE0_ARCH, pretrained=False)
    source = torch.load(backbones.lite0_weights_file(), map_location="cpu", weights_only=True)
    model.load_state_dict(backbones.map_lite0_state(source, model.state_dict()), strict=True)
    return model.eval()


def _synthetic_image() -> Image.Image:
    """A smooth colour gradient with a dark disc: deterministic, no network, no corpus."""
    y, x = np.mgrid[0:224, 0:224]
    rgb = np.stack([x, y, 255 - x], -1).astype(np.uint8)
    rgb[(x - 112) ** 2 + (y - 112) ** 2 < 50 ** 2] = (20, 20, 20)
    return Image.fromarray(rgb)


def test_lite0_weights_load_strictly_and_match_in_count_and_shape():
    source = torch.load(backbones.lite0_weights_file(), map_location="cpu", weights_only=True)
    model = timm.create_model(backbones.LITE0_ARCH, pretrained=False)
    target = model.state_dict()
    assert len(source) == len(target) == 296
    assert [tuple(v.shape) for v in source.values()] == [tuple(v.shape) for v in target.values()]
    mapped = backbones.map_lite0_state(source, target)
    result = model.load_state_dict(mapped, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(model.conv_stem.weight, source["_conv_stem.weight"])
    assert torch.equal(model.classifier.weight, source["_fc.weight"])


def test_lite0_classifies_a_synthetic_image_deterministically_with_imagenet_like_confidence():
    model = _lite0_imagenet()
    batch = eval_transform(224, backbones.Normalization(backbones.LITE0_MEAN, backbones.LITE0_STD))(_synthetic_image())[None]
    with torch.no_grad():
        first, second = torch.softmax(model(batch), 1), torch.softmax(model(batch), 1)
        torch.manual_seed(1)  # a fixed random initialisation: unseeded ones vary in confidence (max 0.02 to 0.08)
        random_init = torch.softmax(timm.create_model(backbones.LITE0_ARCH, pretrained=False).eval()(batch), 1)
    assert torch.equal(first, second)
    assert first.argmax() == second.argmax()
    # trained ImageNet weights commit to a few of the 1000 classes; random weights spread out
    assert first.max() > 0.05 > random_init.max() or first.max() > 10 * random_init.max()
    entropy = lambda p: float(-(p * p.clamp_min(1e-12).log()).sum())  # noqa: E731
    assert entropy(first) < entropy(random_init)


def test_mismatched_lite0_file_is_refused():
    model = timm.create_model(backbones.LITE0_ARCH, pretrained=False)
    source = torch.load(backbones.lite0_weights_file(), map_location="cpu", weights_only=True)
    source.popitem()
    with pytest.raises(FacesetError, match="296"):
        backbones.map_lite0_state(source, model.state_dict())


def test_build_net_lite0_replaces_the_head_and_keeps_pretrained_body():
    net, norm = backbones.build_net("lite0", "lite0", 3)  # the short name is Lite0 too
    assert net.arch == backbones.LITE0_ARCH
    assert norm.mean == (0.5, 0.5, 0.5) and norm.std == (0.5, 0.5, 0.5)
    assert net.head.out_features == 3 and net.head.in_features == 1280
    source = torch.load(backbones.lite0_weights_file(), map_location="cpu", weights_only=True)
    assert torch.equal(net.body.conv_head.weight, source["_conv_head.weight"])
    assert net(torch.zeros(2, 3, 64, 64)).shape == (2, 3)


def test_local_weights_file_loads_and_bad_files_fail_clearly(tmp_path):
    import torchvision

    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "r18.pth")
    net, _ = backbones.build_net("resnet18", str(tmp_path / "r18.pth"), 2)
    assert torch.equal(net.body.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    assert net.head.out_features == 2
    with pytest.raises(FacesetError, match="neither 'imagenet'"):
        backbones.build_net("resnet18", str(tmp_path / "missing.pth"), 2)
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path / "r34.pth")
    with pytest.raises(FacesetError, match="do not fit"):
        backbones.build_net("resnet18", str(tmp_path / "r34.pth"), 2)


def test_imagenet_weights_offline_name_the_cache_and_alternatives(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FacesetError) as caught:
        backbones.build_net("resnet18", "imagenet", 2)
    text = str(caught.value)
    assert str(tmp_path / "hub" / "checkpoints") in text
    assert "lite0" in text and "none" in text


def test_unknown_model_is_a_user_error():
    with pytest.raises(FacesetError, match="unknown model"):
        backbones.build_net("resnet_nonexistent", "none", 2)


@pytest.mark.parametrize("arch", ["resnet18", backbones.LITE0_ARCH])
def test_freeze_policies_and_cached_prefix_equal_the_body(arch):
    net, _ = backbones.build_net(arch, "none", 2)
    frozen = backbones.apply_freeze(net, "head")
    assert [n for n, p in net.named_parameters() if p.requires_grad] == ["head.weight", "head.bias"]
    norms = [m for m in net.body.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and [id(m) for m in frozen] == [id(m) for m in norms]  # every batch norm of the body...
    backbones.train_mode(net, frozen)
    assert net.head.training and not any(m.training for m in norms)  # ...keeps its statistics while training
    backbones.apply_freeze(net, "none")
    assert all(p.requires_grad for p in net.parameters())
    backbones.apply_freeze(net, "last")
    trainable = {".".join(n.split(".")[1:3]) if n.startswith("body.blocks.") else n.split(".")[1]
                 for n, p in net.named_parameters() if p.requires_grad and n.startswith("body.")}
    lite0_last = {f"blocks.{i}" for i in range(backbones.LITE0_FIRST_TRAINED, 7)} | {"conv_head", "bn2"}
    assert trainable == ({"layer4"} if arch == "resnet18" else lite0_last)
    prefix, suffix = backbones.split_frozen(net, "last")
    assert not any(p.requires_grad for p in prefix.parameters())
    net.eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(suffix(prefix(images)), net.body(images))


def test_eval_crop_one_keeps_the_whole_face_crop_and_the_default_crops_the_border():
    """A red frame (the border where hair and chin are on face crops) survives only eval_crop 1."""
    from PIL import Image

    image = Image.new("RGB", (200, 200), (255, 0, 0))
    image.paste((0, 0, 255), (10, 10, 190, 190))  # a 5% red frame
    norm = backbones.Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    whole = eval_transform(100, norm, 1.0)(image)
    cropped = eval_transform(100, norm)(image)
    assert whole.shape == cropped.shape == (3, 100, 100)
    assert whole[0, 1, 50] > 0.9 and whole[2, 50, 50] > 0.9  # red border kept, blue centre
    assert cropped[0, 1, 50] < 0.1 and cropped[0, 50, 1] < 0.1  # 0.875 of the side: 6.25% off each edge


@pytest.mark.parametrize(("arch", "cut", "pool", "channels"), [(backbones.LITE0_ARCH, "blocks.3", 6, 80),
                                                               ("resnet18", "layer3", 2, 256)])
def test_truncated_body_pools_a_middle_stage_on_a_grid(arch, cut, pool, channels):
    net, _ = backbones.build_net(arch, "none", 2, features_from=cut, pool=pool)
    assert net.embedding_dim == channels * pool * pool and net.head.out_features == 2
    net.eval()
    images = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert net(images).shape == (2, 2)
    later = "blocks.4" if arch == backbones.LITE0_ARCH else "layer4"
    assert not any(n.startswith(f"body.model.{later}.") for n, _ in net.named_parameters())  # cut away, not saved
    backbones.apply_freeze(net, "last")  # trains the stage the body ends with, and the head
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert "head.weight" in trainable and all(n.startswith((f"body.model.{cut}.", "head.")) for n in trainable)
    for freeze in ("head", "last"):
        prefix, suffix = backbones.split_frozen(net, freeze)
        with torch.no_grad():
            assert torch.allclose(suffix(prefix(images)), net.body(images), atol=1e-5)


def test_truncation_errors_name_the_stages_and_the_fix():
    with pytest.raises(FacesetError, match=r"(?s)'layer9' is not a stage of ResNet.*layer1, layer1\.0"):
        backbones.build_net("resnet18", "none", 2, features_from="layer9")
    with pytest.raises(FacesetError, match="pool 3 needs features_from"):
        backbones.build_net("resnet18", "none", 2, pool=3)


def test_several_stages_concatenate_their_grids_and_train_from_images():
    net, _ = backbones.build_net(backbones.LITE0_ARCH, "none", 2, features_from=["blocks.4", "blocks.2"], pool=3)
    assert net.embedding_dim == (40 + 112) * 9  # blocks.2 has 40 channels, blocks.4 112
    assert net.body.cut == "blocks.4"  # the deepest: what 'freeze: last' trains
    assert backbones.split_frozen(net, "last") is None  # earlier grids cannot ride on one cached map
    prefix, suffix = backbones.split_frozen(net, "head")  # the whole body is cached instead
    net.eval()
    images = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.allclose(suffix(prefix(images)), net.body(images))
