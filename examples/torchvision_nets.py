"""ResNet-18 and MobileNetV2 in plain ``torch.nn``, with torchvision's module names.

`export_torchvision.py` builds the models with torchvision where it imports. Where it does not
(a CPU-only PyTorch beside PyPI's torchvision, whose compiled ops were built against another
PyTorch, fails at ``import torchvision``), it builds them from here. The module tree, and so every
``state_dict`` key and parameter shape, is the one torchvision 0.2x uses (``conv1``, ``bn1``,
``layer1.0.downsample.0``, ``fc`` for ResNet-18; ``features.N.conv...``, ``classifier.1`` for
MobileNetV2), so a ``.pth`` saved from torchvision's model loads into these with
``load_state_dict(..., strict=True)``, and the exported ONNX graphs have the same operators.

Written from the papers' architecture tables (He et al. 2015, table 1, the 18-layer column;
Sandler et al. 2018, table 2) and torchvision's documented state_dict layout. Random
initialization: PyTorch's default per layer, then, as torchvision does, BatchNorm weight 1 and
bias 0; the running statistics are randomized by `randomize_bn_stats` when asked, so the
inference BatchNorm is not the identity in a numeric comparison.
"""
from __future__ import annotations


def _nets(torch):
    nn = torch.nn

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            skip = x if self.downsample is None else self.downsample(x)
            y = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(y)) + skip)

    class ResNet18(nn.Module):
        def __init__(self, num_classes=1000):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            widths = (64, 128, 256, 512)
            cin = 64
            for i, w in enumerate(widths):
                stride = 1 if i == 0 else 2
                setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(cin, w, stride), BasicBlock(w, w, 1)))
                cin = w
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(512, num_classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    def conv_bn_relu6(cin, cout, k, stride=1, groups=1):
        # torchvision's Conv2dNormActivation: a Sequential of conv (no bias), BN, ReLU6.
        return nn.Sequential(nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, stride, expand):
            super().__init__()
            hidden = cin * expand
            self.use_res_connect = stride == 1 and cin == cout
            layers = [conv_bn_relu6(cin, hidden, 1)] if expand != 1 else []
            layers += [conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
                       nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
            self.conv = nn.Sequential(*layers)

        def forward(self, x):
            return x + self.conv(x) if self.use_res_connect else self.conv(x)

    class MobileNetV2(nn.Module):
        # (expansion t, output channels c, repeats n, first stride s), width multiplier 1.0
        SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

        def __init__(self, num_classes=1000):
            super().__init__()
            feats = [conv_bn_relu6(3, 32, 3, 2)]
            cin = 32
            for t, c, n, s in self.SETTINGS:
                for i in range(n):
                    feats.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                    cin = c
            feats.append(conv_bn_relu6(cin, 1280, 1))
            self.features = nn.Sequential(*feats)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

        def forward(self, x):
            x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
            return self.classifier(torch.flatten(x, 1))

    return {"resnet18": ResNet18, "mobilenet_v2": MobileNetV2}


def build(torch, name: str):
    """An untrained ``name`` ("resnet18" or "mobilenet_v2") with torchvision's module names."""
    net = _nets(torch)[name]()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(m.weight)
            torch.nn.init.zeros_(m.bias)
    return net


def randomize_bn_stats(torch, net, seed: int = 0) -> None:
    """Gives every BatchNorm random running statistics and affine parameters (mean ~ N(0, 0.1),
    var ~ U(0.5, 1.5), weight ~ U(0.5, 1.5), bias ~ N(0, 0.1)), so folding them is tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
