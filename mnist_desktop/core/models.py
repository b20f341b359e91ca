"""Model zoo: named architectures built from a name and keyword arguments.

Every architecture takes ``(N, 1, 28, 28)`` float input (already normalized) and returns
raw logits ``(N, num_classes)``. A checkpoint stores ``arch`` and ``arch_args`` so that
:func:`build_model` can rebuild the exact network without side knowledge.

Architectures
-------------
``mlp``          784-128-64-10 multilayer perceptron (reference recipe 1).
``cnn_mlp``      2 conv (8, 16 filters) + 3 linear layers with dropout, normal init with
                 std 1/sqrt(fan_in) (reference recipe 2).
``mnistnet``     conv32-conv64 with batch norm, dropout 0.25/0.5, fc 9216-128-10
                 (reference recipe 3, the PyTorch example network plus batch norm).
``cnn3``         conv 32-64-128 (3x3, batch norm, max pool), dense 128, dropout 0.4
                 (reference recipe 4).
``conv3_gap``    3 conv + adaptive average pooling + 1 FC (reference recipe 5).
``flagship``     a compact VGG-style CNN sized for <= 0.5 ms single-image CPU latency on
                 one thread.
``flagship_ensemble``  several ``flagship`` networks folded into one (grouped convolutions,
                 logits averaged); built from trained members by :func:`fold_ensemble`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
import torch.nn.functional as F

from mnist_desktop.core.arch_limits import LIMITS, MAX_PARAMETERS, check_arch_args


@dataclass(frozen=True)
class ArchSpec:
    name: str
    builder: Callable[..., nn.Module]
    description: str
    reference: str = ""


_REGISTRY: dict[str, ArchSpec] = {}


def register(name: str, description: str, reference: str = ""):
    """Class/function decorator adding an architecture to the zoo."""

    def deco(builder):
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} registered twice")
        if name not in LIMITS:
            raise ValueError(f"architecture {name!r} has no entry in arch_limits.LIMITS")
        _REGISTRY[name] = ArchSpec(name, builder, description, reference)
        return builder

    return deco


def available_architectures() -> dict[str, ArchSpec]:
    """All registered architectures, by name."""
    return dict(_REGISTRY)


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build architecture ``name`` with ``kwargs`` (e.g. ``num_classes=10``).

    Every argument is checked first (:func:`~mnist_desktop.core.arch_limits.check_arch_args`:
    type, range, at most :data:`~mnist_desktop.core.arch_limits.MAX_PARAMETERS` parameters).

    Raises
    ------
    KeyError
        With the list of known names when ``name`` is unknown.
    ValueError
        An argument of the wrong type or out of range, or a network over the budget.
    """
    try:
        spec = _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown architecture {name!r}; known: {', '.join(sorted(_REGISTRY))}"
        ) from None
    args = dict(kwargs)
    num_classes = args.pop("num_classes", 10)
    check_arch_args(name, args, num_classes)
    # The limits' parameter count is checked against the network itself, built on the
    # meta device (shapes only, nothing allocated), before the real one is built.
    with torch.device("meta"):
        count = count_parameters(spec.builder(num_classes=num_classes, **args))
    if count > MAX_PARAMETERS:
        raise ValueError(f"{name} has {count:,} parameters, over the limit of {MAX_PARAMETERS:,}")
    return spec.builder(num_classes=num_classes, **args)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@register("mlp", "MLP 784-128-64-10", "reference recipe 1 (SGD, batch 32)")
class MLP(nn.Module):
    def __init__(self, num_classes: int = 10, hidden: tuple[int, ...] = (128, 64)):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = 28 * 28
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register("cnn_mlp", "2 conv (8, 16) + 3 linear with dropout", "reference recipe 2 (Adam, rotation)")
class CNNMLP(nn.Module):
    def __init__(self, num_classes: int = 10, dropout: float = 0.25):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 7 * 7, 256), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(256, 128), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(128, num_classes),
        )
        self._init_normal()

    def _init_normal(self) -> None:
        # The reference recipe initializes every weight from N(0, 1/sqrt(fan_in)).
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                nn.init.normal_(m.weight, 0.0, 1.0 / math.sqrt(fan_in))
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register("mnistnet", "MNISTNet: conv32-conv64 + BN, dropout 0.25/0.5, fc 9216-128-10",
          "reference recipe 3 (Adam 1e-3, 99.30%)")
class MNISTNet(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.bn2 = nn.BatchNorm2d(64)
        self.dropout1 = nn.Dropout(0.25)
        self.fc1 = nn.Linear(9216, 128)
        self.dropout2 = nn.Dropout(0.5)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.max_pool2d(x, 2)
        x = self.dropout1(torch.flatten(x, 1))
        x = self.dropout2(F.relu(self.fc1(x)))
        return self.fc2(x)


def _conv_bn(cin: int, cout: int, k: int = 3, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False, groups=groups), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]


@register("cnn3", "CNN 32-64-128 (3x3, BN, max pool), dense 128, dropout 0.4",
          "reference recipe 4 (SGD+momentum, ReduceLROnPlateau, 60 epochs, 99.35%)")
class CNN3(nn.Module):
    def __init__(self, num_classes: int = 10, dropout: float = 0.4):
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn(1, 32), nn.MaxPool2d(2),     # 14
            *_conv_bn(32, 64), nn.MaxPool2d(2),    # 7
            *_conv_bn(64, 128), nn.MaxPool2d(2),   # 3
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(128 * 3 * 3, 128), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register("conv3_gap", "3 conv + adaptive average pooling + 1 FC",
          "reference recipe 5 (blur denoise, rot 10/translate 10%, [-1,1], Adam, ~98%)")
class Conv3GAP(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
        )
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))


@register("flagship", "compact VGG-style CNN (ours), sized for <= 0.5 ms CPU latency", "our default model")
class Flagship(nn.Module):
    """Compact VGG-style CNN with batch norm and global average + max pooling.

    28x28: conv(w) conv(w) pool -> 14x14: conv(2w) conv(2w) pool -> 7x7: conv(4w) conv(4w)
    -> [mean, max] pooling -> dropout -> linear. With ``width=16`` (73k parameters) a single
    image takes about 0.4 ms on one CPU thread; its accuracy comes from the training recipe
    (heavy augmentation, distillation from a wider ensemble), not from size.
    """

    def __init__(self, num_classes: int = 10, width: int = 16, dropout: float = 0.1):
        super().__init__()
        self.features, self.dropout, self.fc = _flagship_layers(num_classes, width, 1, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        pooled = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)
        return self.fc(self.dropout(pooled))


def _flagship_layers(num_classes: int, width: int, members: int, dropout: float):
    """``(features, dropout, fc)`` of :class:`Flagship` (``members=1``) or of ``members``
    flagship networks side by side, every convolution after the first grouped by member."""
    w, k = width, members
    features = nn.Sequential(
        *_conv_bn(1, k * w), *_conv_bn(k * w, k * w, groups=k), nn.MaxPool2d(2),                   # 14
        *_conv_bn(k * w, 2 * k * w, groups=k), *_conv_bn(2 * k * w, 2 * k * w, groups=k), nn.MaxPool2d(2),  # 7
        *_conv_bn(2 * k * w, 4 * k * w, groups=k), *_conv_bn(4 * k * w, 4 * k * w, groups=k),
    )
    return features, nn.Dropout(dropout), nn.Linear(8 * k * w, num_classes)


@register("flagship_ensemble", "flagship networks averaged, folded into one grouped CNN", "our default model")
class FlagshipEnsemble(nn.Module):
    """``members`` flagship networks of one width in one network, their logits averaged.

    Member ``k`` owns channels ``k*c .. (k+1)*c - 1`` of every layer (``c`` the member's own
    channel count there); every convolution after the first is grouped by member, so no
    member sees another's channels, and the linear layer holds each member's weights
    divided by ``members``. The output equals the mean of the members' logits exactly (up to
    float rounding; :func:`fold_ensemble`), in one forward pass: under ONNX Runtime two
    width-16 members take 0.27 ms on one thread against 0.15 ms for one.
    """

    def __init__(self, num_classes: int = 10, width: int = 16, members: int = 2, dropout: float = 0.1):
        super().__init__()
        if members < 1:
            raise ValueError(f"an ensemble needs at least one member (got {members})")
        self.members = members
        self.features, self.dropout, self.fc = _flagship_layers(num_classes, width, members, dropout)

    forward = Flagship.forward


def fold_ensemble(members: list[nn.Module]) -> FlagshipEnsemble:
    """One :class:`FlagshipEnsemble` (eval mode) whose logits are the mean of ``members``'
    logits. The members must be :class:`Flagship` networks of one width and class count."""
    if not members or not all(type(m) is Flagship for m in members):
        raise ValueError("fold_ensemble takes one or more flagship networks")
    width = members[0].features[0].out_channels
    num_classes = members[0].fc.out_features
    if any(m.features[0].out_channels != width or m.fc.out_features != num_classes for m in members):
        raise ValueError("the members differ in width or in number of classes")
    k = len(members)
    folded = FlagshipEnsemble(num_classes, width, k, members[0].dropout.p).eval()
    with torch.no_grad():
        for layer, parts in zip(folded.features, zip(*(m.features for m in members))):
            for name, tensor in [*layer.named_parameters(recurse=False), *layer.named_buffers(recurse=False)]:
                if name == "num_batches_tracked":
                    continue
                tensor.copy_(torch.cat([getattr(p, name) for p in parts], dim=0))
        c = 4 * width     # channels of one member's last layer: fc reads [means of all, maxima of all]
        weight = torch.zeros_like(folded.fc.weight)
        for i, m in enumerate(members):
            weight[:, i * c:(i + 1) * c] = m.fc.weight[:, :c] / k
            weight[:, (k + i) * c:(k + i + 1) * c] = m.fc.weight[:, c:] / k
        folded.fc.weight.copy_(weight)
        folded.fc.bias.copy_(torch.stack([m.fc.bias for m in members]).mean(0))
    return folded


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """Fold every Conv2d followed by BatchNorm2d inside ``nn.Sequential`` containers into
    one convolution (eval mode only); fewer ops means lower single-image latency."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model.eval()
    for module in list(model.modules()):
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module._modules.items())
        for (name_a, a), (name_b, b) in zip(children, children[1:]):
            if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d) and b.track_running_stats:
                module._modules[name_a] = fuse_conv_bn_eval(a, b)
                module._modules[name_b] = nn.Identity()
        # Drop the placeholders: each module call costs microseconds on a single image.
        kept = [(k, m) for k, m in module._modules.items() if not isinstance(m, nn.Identity)]
        if len(kept) != len(module._modules):
            module._modules.clear()
            module._modules.update(kept)
    return model
