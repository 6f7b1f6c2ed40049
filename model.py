"""Models and the model registry: every script builds a model with `build_model`.

Every model exposes `forward_features(x)` (the penultimate, pre-logits feature vector, used by
analyze.py for t-SNE and neighbours) and `forward_head(features)` (the classifier), as in timm.

    python model.py resnet18 --in-channels 3 --num-classes 10
"""
import functools
import inspect
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

import cli

# ----------------------------------------------------------------------------- models

class ConvNet(nn.Module):
    """The classic assignment's ConvNet: 14,178 parameters for 1x28x28 input."""

    def __init__(self, num_classes=10, in_channels=1, img_size=28, drop_rate=0.25):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(drop_rate),
            nn.Conv2d(8, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(drop_rate),
            nn.Flatten(),
        )
        side = ((img_size - 2) // 2 - 2) // 2  # two unpadded 3x3 convs, two 2x2 pools
        self.fc1 = nn.Linear(8 * side * side, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward_features(self, x):
        return F.relu(self.fc1(self.features(x)))

    def forward_head(self, x):
        return self.fc2(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def _conv_bn(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class Net(nn.Module):
    """The project's small MNIST CNN (docs/training.md, "Models").

    Three stages of 3x3 conv + BatchNorm + ReLU, widening 16 -> 32 -> 64 (default width) while max-pooling
    28 -> 14 -> 7 -> 3, then global average pooling, dropout and one linear layer. The first
    stage is a single conv at full resolution (cheap: one input channel); the wide convs run at
    14x14 and 7x7: ~5.5 MMACs per image and 70k parameters, so it trains fast on a CPU.
    """

    def __init__(self, num_classes=10, in_channels=1, drop_rate=0.2, width=16):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _conv_bn(in_channels, w), nn.MaxPool2d(2),
            _conv_bn(w, 2 * w), _conv_bn(2 * w, 2 * w), nn.MaxPool2d(2),
            _conv_bn(2 * w, 4 * w), _conv_bn(4 * w, 4 * w), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(4 * w, num_classes)

    def forward_features(self, x):
        return self.features(x)

    def forward_head(self, x):
        return self.fc(self.dropout(x))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


class MnistExample(nn.Module):
    """The net of pytorch/examples mnist/main.py, the peer recipe bench.py compares against."""

    def __init__(self, num_classes=10, in_channels=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, num_classes)

    def forward_features(self, x):
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        return F.relu(self.fc1(torch.flatten(self.dropout1(x), 1)))

    def forward_head(self, x):
        return self.fc2(self.dropout2(x))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def mlp_head(in_features, num_classes, drop_rate=0.3):
    """512 -> 256 -> 128 -> C with BatchNorm, ReLU and dropout (for non-digit problems)."""
    return nn.Sequential(
        nn.Linear(in_features, 256), nn.BatchNorm1d(256), nn.ReLU(inplace=True), nn.Dropout(drop_rate),
        nn.Linear(256, 128), nn.BatchNorm1d(128), nn.ReLU(inplace=True), nn.Dropout(drop_rate),
        nn.Linear(128, num_classes),
    )


class ResNet18(nn.Module):
    """torchvision's ResNet-18 (He et al.), trained from scratch.

    The 7x7 stem is kept (so 3 channels / 10 classes give torchvision's 11,181,642 parameters);
    it takes `in_channels` inputs, and for small images (<= 32 px) it runs at stride 1 without
    the max-pool, as is usual for CIFAR/MNIST sizes, so layer4 does not see a 1x1 map.
    `head="mlp"` swaps the linear classifier for `mlp_head`.
    """

    def __init__(self, num_classes=10, in_channels=3, img_size=128, drop_rate=0.0, head="linear"):
        super().__init__()
        from torchvision.models import resnet18
        net = resnet18(weights=None, num_classes=num_classes)
        small = img_size <= 32
        net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=1 if small else 2, padding=3, bias=False)
        if small:
            net.maxpool = nn.Identity()
        net.fc = nn.Identity()
        self.backbone = net
        self.dropout = nn.Dropout(drop_rate)
        if head == "linear":
            self.fc = nn.Linear(512, num_classes)
        elif head == "mlp":
            self.fc = mlp_head(512, num_classes)
        else:
            raise ValueError(f"unknown head {head!r} (choose linear or mlp)")

    def forward_features(self, x):
        return self.backbone(x)

    def forward_head(self, x):
        return self.fc(self.dropout(x))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


MODELS = {
    "convnet": ConvNet,
    "net": Net,
    "resnet18": ResNet18,
    "mnist_example": MnistExample,
}


def list_models():
    return sorted(MODELS)


def model_kwargs(name, **kwargs):
    """The subset of kwargs that model `name` takes (stored in checkpoints as model_args), so
    callers can pass the full set (e.g. `img_size`, which `net` does not use)."""
    accepted = inspect.signature(MODELS[name].__init__).parameters
    return {k: v for k, v in kwargs.items() if k in accepted and v is not None}


def build_model(name, num_classes, in_channels, **kwargs):
    """The one way every script builds a model."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(list_models())}")
    return MODELS[name](num_classes=num_classes, in_channels=in_channels, **model_kwargs(name, **kwargs))


@functools.lru_cache(maxsize=None)
def _fits(name, img_size, in_channels=1):
    """Whether model `name` takes img_size x img_size inputs: a forward pass on the meta device
    (shapes only, no memory, no arithmetic)."""
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        model = build_model(name, 2, in_channels, img_size=img_size).eval()
        try:
            model(torch.zeros(2, in_channels, img_size, img_size))
            return True
        except (RuntimeError, ValueError, TypeError, OverflowError):  # (a size past int64: TypeError)
            return False


def forward_cost(name, in_channels, img_size, **model_args):
    """(FLOPs, activation bytes) of one image's forward pass in training mode, counted on the meta
    device from the layers' output shapes: conv and linear FLOPs, and every layer's fp32 output
    (what backward keeps, roughly). A training step costs about 3x the FLOPs."""
    flops, acts = [0], [0]

    def count(m, _, out):
        if isinstance(m, nn.Conv2d):
            flops[0] += 2 * out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            flops[0] += 2 * out.numel() * m.in_features
        if isinstance(out, torch.Tensor):
            acts[0] += out.numel() * 4
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        model = build_model(name, 2, in_channels, **dict(model_args, img_size=img_size)).train()
        for m in model.modules():
            if not any(m.children()):
                m.register_forward_hook(count)
        model(torch.zeros(2, in_channels, img_size, img_size))  # 2: BatchNorm1d (--head mlp) refuses a batch of 1
    return flops[0] // 2, acts[0] // 2


def img_size_error(name, img_size):
    """None when model `name` works at `img_size`, else a line that names the sizes it takes
    (found by trying: convnet >= 10, net >= 8, mnist_example 28 or 29, resnet18 any)."""
    if img_size >= 1 and _fits(name, img_size):
        return None
    ok = [s for s in range(1, 65) if _fits(name, s)]
    need = (f">= {ok[0]}" if ok and ok == list(range(ok[0], 65)) else
            " or ".join(map(str, ok)) if ok else "none up to 64")
    return f"--img-size {img_size} does not fit model {name!r} (it takes --img-size {need})"


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())


def first_conv(model):
    """The first Conv2d layer (analyze.py draws its kernels)."""
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


# ----------------------------------------------------------------------------- CLI

def get_args_parser():
    p = cli.ArgumentParser(description="Print a model, its parameters per top-level module, and the total.")
    p.add_argument("model", choices=list_models())
    p.add_argument("--in-channels", type=int, default=1)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--img-size", type=int, default=28)
    return p


def main(args):
    cli.check_args(args, ("in_channels", args.in_channels >= 1, ">= 1"), ("num_classes", args.num_classes >= 1, ">= 1"))
    if img_size_error(args.model, args.img_size):
        raise cli.UsageError(img_size_error(args.model, args.img_size))
    model = build_model(args.model, args.num_classes, args.in_channels, img_size=args.img_size)
    print(model)
    print(f"\n{'module':<20}{'parameters':>14}")
    for name, child in model.named_children():
        print(f"{name:<20}{count_parameters(child):>14,}")
    print(f"parameters: {count_parameters(model)}")


if __name__ == "__main__":
    cli.run_main(main, get_args_parser().parse_args)
