"""Augmentation presets: per sample (torchvision transforms.v2, `build_transform`) and the same
presets on whole uint8 batches held on the training device (`BatchAugment`, `DeviceLoader`).
"""
import math

import torch
import torch.nn.functional as F
from torch.utils.data import ConcatDataset
from torchvision.transforms import v2

AUGMENT_PRESETS = ("none", "light", "strong")
STRONG_REF_SIZE = 128  # the `strong` preset is Table 1 of the reference report, specified at 128 px


def strong_blur(img_size):
    """(kernel size, (sigma min, sigma max)) of `strong`'s Gaussian blur at `img_size`: Table 1's
    5 px kernel with sigma 0.1-2 px at 128 px, scaled by img_size / 128 so that every size gets the
    same blur relative to the digit (the kernel stays odd and >= 3). The blur is the preset's only
    step measured in pixels; crops, shifts, perspective and erasing are fractions of the image."""
    s = img_size / STRONG_REF_SIZE
    return max(3, 2 * round(2 * s) + 1), (0.1 * s, 2.0 * s)


def build_transform(preset, img_size, mean, std, train=True):
    """uint8 image tensor [C, H, W] -> normalised float tensor [C, img_size, img_size].

    Val / test (train=False) and the `none` preset are deterministic: resize and normalise.
    `light` is the classic assignment's small rotation / affine / blur; `strong` is the
    in-the-wild photo preset (no flips: a 6 must not become a 9)."""
    if preset not in AUGMENT_PRESETS:
        raise ValueError(f"unknown augment preset {preset!r}")
    resize = v2.Resize((img_size, img_size), antialias=True)
    to_float = [v2.ToDtype(torch.float32, scale=True)]
    norm = v2.Normalize(mean, std)
    if not train or preset == "none":
        return v2.Compose([resize] + to_float + [norm])
    if preset == "light":
        return v2.Compose([
            resize,
            v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1)),
            v2.RandomApply([v2.GaussianBlur(3, sigma=(0.1, 1.0))], p=0.3),
            *to_float, norm,
        ])
    return v2.Compose([
        v2.RandomResizedCrop(img_size, scale=(0.7, 1.0), ratio=(0.75, 1.33), antialias=True),
        v2.RandomRotation(20),
        v2.RandomPerspective(0.2, p=0.5),
        v2.RandomAffine(degrees=0, translate=(0.1, 0.1), scale=(0.9, 1.1)),
        v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1),
        v2.GaussianBlur(*strong_blur(img_size)),
        *to_float,
        v2.GaussianNoise(sigma=0.05),
        norm,
        v2.RandomErasing(p=0.25, scale=(0.02, 0.15)),
    ])


# ----------------------------------------------------------------------------- batched augmentation
#
# The same presets as `build_transform`, applied per sample but to whole uint8 batches held on
# the training device (as the CIFAR-10 speedruns do): every geometric step (random resized crop,
# rotation, perspective, affine) is a 3x3 matrix, so a sample's whole geometry is one homography
# and a batch needs one grid_sample. Opt-in (--device-data): its random streams differ from
# torchvision's, and hue is shifted by a rotation in YIQ space rather than in HSV.

def _uniform(n, lo, hi, device):
    return torch.rand(n, device=device) * (hi - lo) + lo


def _rotation(angle_deg):
    a = torch.deg2rad(angle_deg)
    m = torch.zeros(len(a), 3, 3, device=a.device)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1], m[:, 2, 2] = a.cos(), -a.sin(), a.sin(), a.cos(), 1
    return m


def _scale_shift(sx, sy, tx, ty):
    m = torch.zeros(len(sx), 3, 3, device=sx.device)
    m[:, 0, 0], m[:, 1, 1], m[:, 0, 2], m[:, 1, 2], m[:, 2, 2] = sx, sy, tx, ty, 1
    return m


def _homography(src, dst):
    """Per-sample 3x3 H with H @ src_i ~ dst_i for 4 point pairs [B, 4, 2] (DLT, h33 = 1)."""
    b = src.shape[0]
    x, y, u, v = src[..., 0], src[..., 1], dst[..., 0], dst[..., 1]
    zeros, ones = torch.zeros_like(x), torch.ones_like(x)
    rows_u = torch.stack([x, y, ones, zeros, zeros, zeros, -u * x, -u * y], -1)
    rows_v = torch.stack([zeros, zeros, zeros, x, y, ones, -v * x, -v * y], -1)
    a = torch.cat([rows_u, rows_v], 1)
    h = torch.linalg.solve(a, torch.cat([u, v], 1))
    return torch.cat([h, torch.ones(b, 1, device=src.device)], 1).view(b, 3, 3)


def _blur(x, sigma, k):
    """Per-sample Gaussian blur (separable, reflect padding) with sigma [B]."""
    b, c, h, w = x.shape
    r = torch.arange(k, device=x.device, dtype=x.dtype) - (k - 1) / 2
    kern = torch.exp(-r[None] ** 2 / (2 * sigma[:, None] ** 2))
    kern = (kern / kern.sum(1, keepdim=True)).repeat_interleave(c, 0)  # [B*C, k]
    y = F.pad(x.reshape(1, b * c, h, w), [k // 2] * 4, mode="reflect")
    y = F.conv2d(y, kern[:, None, None, :], groups=b * c)
    y = F.conv2d(y, kern[:, None, :, None], groups=b * c)
    return y.view(b, c, h, w)


def _gray(x):
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]) if x.shape[1] == 3 else x


class BatchAugment:
    """Preset augmentation for a uint8 batch [B, C, S, S] on any device -> normalised float
    [B, C, img_size, img_size]. Uses the global torch RNG (seeded per epoch by train.py)."""

    def __init__(self, preset, img_size, mean, std):
        if preset not in AUGMENT_PRESETS:
            raise ValueError(f"unknown augment preset {preset!r}")
        self.preset, self.img_size = preset, img_size
        self.mean, self.std = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
        self._base = None

    def geometry(self, b, device):
        """The preset's geometric steps as output -> input coordinate maps [B, 3, 3], in the order
        torchvision applies them (the first one reads the source image)."""
        if self.preset == "light":  # RandomAffine(10, translate 0.1, scale 0.9-1.1)
            return [_rotation(_uniform(b, -10, 10, device)) @ self._affine(b, device)]
        # strong: RandomResizedCrop -> RandomRotation -> RandomPerspective -> RandomAffine
        area = _uniform(b, 0.7, 1.0, device)
        ratio = torch.exp(_uniform(b, math.log(0.75), math.log(1.33), device))
        w, h = (area * ratio).sqrt().clamp(max=1), (area / ratio).sqrt().clamp(max=1)
        cx, cy = _uniform(b, -1, 1, device) * (1 - w), _uniform(b, -1, 1, device) * (1 - h)
        crop = _scale_shift(w, h, cx, cy)
        corners = torch.tensor([[-1, -1], [1, -1], [1, 1], [-1, 1]], device=device, dtype=torch.float32)
        inward = -corners.sign() * torch.rand(b, 4, 2, device=device) * 0.2  # distortion 0.2
        moved = corners + inward * (torch.rand(b, 1, 1, device=device) < 0.5)
        persp = _homography(moved, corners.expand(b, 4, 2))  # output corners come from the image corners
        return [crop, _rotation(_uniform(b, -20, 20, device)), persp, self._affine(b, device)]

    @staticmethod
    def _affine(b, device):
        s = _uniform(b, 0.9, 1.1, device)
        t = _uniform(b * 2, -0.2, 0.2, device).view(2, b)  # translate 0.1 of the side = 0.2 in [-1, 1]
        return _scale_shift(1 / s, 1 / s, -t[0] / s, -t[1] / s)

    def __call__(self, images):
        x = images.float().div_(255)
        b, dev, n = x.shape[0], x.device, self.img_size
        if self.preset == "none":
            if x.shape[-1] != n:
                x = F.interpolate(x, size=(n, n), mode="bilinear", antialias=True, align_corners=False)
        else:
            if self._base is None or self._base.device != dev:
                r = (torch.arange(n, device=dev, dtype=torch.float32) * 2 + 1) / n - 1
                yy, xx = torch.meshgrid(r, r, indexing="ij")
                self._base = torch.stack([xx, yy, torch.ones_like(xx)], -1)  # [n, n, 3]
            # Walk each output pixel back through the steps. torchvision fills zeros at every step
            # whose frame the pixel leaves (the rotated crop's corners...), so mask those; the
            # first step reads the source image, where grid_sample's zero padding does the same.
            steps, grid = self.geometry(b, dev), self._base.expand(b, n, n, 3)
            inside = torch.ones(b, n, n, dtype=torch.bool, device=dev)
            for k, m in enumerate(reversed(steps)):
                grid = torch.einsum("bij,bhwj->bhwi", m, grid)
                grid = grid / grid[..., 2:].clamp_min(1e-6)
                if k < len(steps) - 1:
                    inside &= (grid[..., :2].abs() <= 1).all(-1)
            x = F.grid_sample(x, grid[..., :2], mode="bilinear", padding_mode="zeros", align_corners=False)
            x = x * inside.unsqueeze(1)
            if self.preset == "light":  # RandomApply(GaussianBlur(3, 0.1-1.0), p=0.3)
                sigma = torch.where(torch.rand(b, device=dev) < 0.3, _uniform(b, 0.1, 1.0, dev),
                                    torch.full((b,), 1e-3, device=dev))
                x = _blur(x, sigma, 3)
            else:
                x = self._color_jitter(x)
                k, (lo, hi) = strong_blur(n)
                x = _blur(x, _uniform(b, lo, hi, dev), k)
                x = (x + 0.05 * torch.randn_like(x)).clamp_(0, 1)
        x = (x - self.mean.to(dev)) / self.std.to(dev)
        if self.preset == "strong":
            x = self._erase(x)
        return x

    @staticmethod
    def _color_jitter(x):
        """brightness, contrast, saturation 0.4 and hue 0.1, in that order."""
        b, dev = x.shape[0], x.device
        f = lambda: _uniform(b, 0.6, 1.4, dev).view(b, 1, 1, 1)  # noqa: E731
        x = (x * f()).clamp(0, 1)
        m = _gray(x).mean((1, 2, 3), keepdim=True)
        x = ((x - m) * f() + m).clamp(0, 1)
        if x.shape[1] == 3:
            g = _gray(x)
            x = ((x - g) * f() + g).clamp(0, 1)
            theta = _uniform(b, -0.1, 0.1, dev) * 2 * math.pi  # hue: rotate the IQ chroma plane
            yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], device=dev)
            rot = torch.zeros(b, 3, 3, device=dev)
            rot[:, 0, 0], rot[:, 1, 1], rot[:, 2, 2] = 1, theta.cos(), theta.cos()
            rot[:, 1, 2], rot[:, 2, 1] = -theta.sin(), theta.sin()
            m3 = torch.linalg.inv(yiq) @ rot @ yiq
            x = torch.einsum("bij,bjhw->bihw", m3, x).clamp(0, 1)
        return x

    @staticmethod
    def _erase(x):
        """RandomErasing(p=0.25, scale=(0.02, 0.15), ratio=(0.3, 3.3), value=0)."""
        b, _, h, w = x.shape
        dev = x.device
        area = _uniform(b, 0.02, 0.15, dev) * h * w
        ratio = torch.exp(_uniform(b, math.log(0.3), math.log(3.3), dev))
        eh, ew = (area * ratio).sqrt().clamp(max=h), (area / ratio).sqrt().clamp(max=w)
        y0, x0 = torch.rand(b, device=dev) * (h - eh), torch.rand(b, device=dev) * (w - ew)
        yy = torch.arange(h, device=dev).view(1, h, 1)
        xx = torch.arange(w, device=dev).view(1, 1, w)
        mask = ((yy >= y0.view(b, 1, 1)) & (yy < (y0 + eh).view(b, 1, 1)) & (xx >= x0.view(b, 1, 1))
                & (xx < (x0 + ew).view(b, 1, 1)) & (torch.rand(b, 1, 1, device=dev) < 0.25))
        return x.masked_fill(mask[:, None], 0.0)


class DeviceLoader:
    """Training batches straight from uint8 tensors held on `device` (MNIST, a photo folder at
    128 px), augmented by `BatchAugment`. Yields (images, labels, sources, weights) like a
    DataLoader over the dataset, in the order of `sampler` (indices, e.g. `epoch_order`) when it
    is set, else shuffled by `generator`."""

    def __init__(self, dataset, batch_size, device, augment, drop_last=True):
        parts = dataset.datasets if isinstance(dataset, ConcatDataset) else [dataset]
        side = max(p.images.shape[-1] for p in parts)
        imgs = []
        for p in parts:
            x = p.images[p.indices]
            if x.shape[-1] != side:  # e.g. synthetic composites next to larger cached photos
                x = F.interpolate(x.float(), size=(side, side), mode="bilinear", antialias=True).round().clamp(0, 255).to(torch.uint8)
            imgs.append(x)
        self.images = torch.cat(imgs).to(device)
        self.labels = torch.cat([p.labels[p.indices] for p in parts]).to(device)
        self.sources = torch.cat([torch.full((len(p),), p.source) for p in parts]).to(device)
        self.weights = torch.cat([torch.ones(len(p)) if p.weights is None else p.weights[p.indices]
                                  for p in parts]).to(device)
        self.batch_size, self.augment, self.drop_last = batch_size, augment, drop_last
        self.sampler = self.generator = None

    def __len__(self):
        n = len(self.labels) if self.sampler is None else len(self.sampler)
        return n // self.batch_size if self.drop_last and n >= self.batch_size else -(-n // self.batch_size)

    def __iter__(self):
        order = (torch.randperm(len(self.labels), generator=self.generator) if self.sampler is None
                 else torch.as_tensor(self.sampler, dtype=torch.long)).to(self.images.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield self.augment(self.images[idx]), self.labels[idx], self.sources[idx], self.weights[idx]
