"""The authors' RandAugment, bug for bug, on batches of uint8 tensors (`Recipe.randaugment="authors"`).

Their training code (GitHub DUAT-Maker/Shallow-Paraformer, randomaug.py, from kentaroy47/vision-transformers-cifar10)
draws 2 of 16 operations per image (15 for greyscale: no Cutout), with replacement, each at value
v = magnitude / 30 * (max - min) + min, and a random sign for the geometric ones. At their magnitude 14:

- translations are *absolute*, v = 46.7 px, applied to the 32 px image before it is resized to 224: a translated
  image is mostly or wholly blank (about 23% of their training images are);
- Cutout is an 18.7 px square of colour (125, 123, 114), its corner drawn with numpy's `uniform(w)`, which is
  uniform on (1, w], not [0, w);
- Posterize keeps 1 bit, Solarize inverts from 119.47, SolarizeAdd adds 51.3 then inverts from 128.

PIL computes each operation there. Here every operation is batched over the images that drew it, on the images'
device, with PIL's conventions where they decide pixels: affine maps sample the nearest pixel at
floor(matrix @ (x + 0.5, y + 0.5)) and fill with 0; blends (Color, Contrast, Brightness, Sharpness) truncate
deg + alpha (image - deg) in float32; greyscale is PIL's fixed-point L. tests/test_authors_recipe.py compares every
operation with the numbers their code computes (tests/fixtures/authors_randaugment.pt).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# name, min, max: their augment_list(), in their order (Cutout last, and only for colour images)
OPERATIONS = (("AutoContrast", 0, 1), ("Equalize", 0, 1), ("Invert", 0, 1), ("Rotate", 0, 30), ("Posterize", 0, 4),
              ("Solarize", 0, 256), ("SolarizeAdd", 0, 110), ("Color", 0.1, 1.9), ("Contrast", 0.1, 1.9),
              ("Brightness", 0.1, 1.9), ("Sharpness", 0.1, 1.9), ("ShearX", 0.0, 0.3), ("ShearY", 0.0, 0.3),
              ("TranslateXabs", 0.0, 100), ("TranslateYabs", 0.0, 100), ("CutoutAbs", 0, 40))
SIGNED = {"Rotate", "ShearX", "ShearY", "TranslateXabs", "TranslateYabs"}  # their sign flips with probability 1/2
CUTOUT_COLOUR = (125, 123, 114)
NUM_OPS = 2  # their N


def operation_value(name: str, magnitude: float) -> float:
    """v = magnitude / 30 * (max - min) + min, as their RandAugment.__call__ computes it."""
    _, low, high = next(op for op in OPERATIONS if op[0] == name)
    return (float(magnitude) / 30) * float(high - low) + low


def operations_for(channels: int) -> tuple[str, ...]:
    """Their list for colour images; for greyscale ('L') images, without Cutout."""
    names = tuple(op[0] for op in OPERATIONS)
    return names if channels == 3 else names[:-1]


# --- PIL's pixel conventions ------------------------------------------------------------------------------

def _pil_grey(images: torch.Tensor) -> torch.Tensor:
    """PIL's convert("L") of RGB: (R 19595 + G 38470 + B 7471 + 2^15) >> 16, as (N, 1, H, W) uint8."""
    if images.shape[1] == 1:
        return images
    r, g, b = images.to(torch.int32).unbind(1)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).to(torch.uint8).unsqueeze(1)


def _blend(degenerate: torch.Tensor, images: torch.Tensor, alpha: float) -> torch.Tensor:
    """PIL's Image.blend(degenerate, image, alpha) on uint8: deg + alpha (image - deg) in float32, then truncated."""
    out = degenerate.float() + alpha * (images.float() - degenerate.float())
    return out.clamp(0, 255).to(torch.uint8)  # clamped to [0, 255] first, so the cast truncates as PIL's (UINT8)


def _pil_affine(images: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """PIL's Image.transform(size, AFFINE, (a, b, c, d, e, f)), nearest, fill 0, with one matrix per image
    ((N, 6), float64): output pixel (x, y) reads input pixel (a(x+.5) + b(y+.5) + c, d(x+.5) + e(y+.5) + f), rounded
    down. As PIL: in floats where the map has no rotation or shear, else in its 16.16 fixed point (Geometry.c),
    whose rounding moves a few pixels of a rotated image."""
    n, c, h, w = images.shape
    device = images.device
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64, device=device),
                            torch.arange(w, dtype=torch.float64, device=device), indexing="ij")
    a, b, c0, d, e, f = (matrices[:, i].view(n, 1, 1) for i in range(6))
    src_x = torch.floor(a * (xs + 0.5) + b * (ys + 0.5) + c0)
    src_y = torch.floor(d * (xs + 0.5) + e * (ys + 0.5) + f)

    def fixed(v):  # PIL's FIX(v): floor(v * 65536 + 0.5)
        return torch.floor(v * 65536.0 + 0.5).to(torch.int64)
    xi, yi = xs.to(torch.int64), ys.to(torch.int64)
    fixed_x = torch.div(fixed(a * 0.5 + b * 0.5 + c0) + xi * fixed(a) + yi * fixed(b), 65536, rounding_mode="floor")
    fixed_y = torch.div(fixed(d * 0.5 + e * 0.5 + f) + xi * fixed(d) + yi * fixed(e), 65536, rounding_mode="floor")
    axis_aligned = (b.abs() < 1e-6) & (d.abs() < 1e-6)
    src_x = torch.where(axis_aligned, src_x, fixed_x.to(torch.float64))
    src_y = torch.where(axis_aligned, src_y, fixed_y.to(torch.float64))
    inside = (src_x >= 0) & (src_x < w) & (src_y >= 0) & (src_y < h)
    flat = (src_y.clamp(0, h - 1) * w + src_x.clamp(0, w - 1)).long().view(n, 1, h * w).expand(n, c, h * w)
    out = images.reshape(n, c, h * w).gather(2, flat).view(n, c, h, w)
    return torch.where(inside.unsqueeze(1), out, torch.zeros((), dtype=images.dtype, device=device))


def _rotation_matrices(degrees: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """PIL's Image.rotate(v): the inverse map about the centre (w/2, h/2), its entries rounded to 15 decimals."""
    angle = -torch.deg2rad(degrees.to(torch.float64) % 360.0)
    cos, sin = torch.round(torch.cos(angle), decimals=15), torch.round(torch.sin(angle), decimals=15)
    cx, cy = w / 2.0, h / 2.0
    c = cos * -cx + sin * -cy + cx
    f = -sin * -cx + cos * -cy + cy
    return torch.stack([cos, sin, c, -sin, cos, f], dim=1)


def _equalize(images: torch.Tensor) -> torch.Tensor:
    """PIL's ImageOps.equalize, per image and channel: a lookup table from the histogram without its last bin."""
    n, c, h, w = images.shape
    flat = images.reshape(n * c, h * w).long()
    hist = torch.zeros(n * c, 256, dtype=torch.long, device=images.device).scatter_add_(1, flat, torch.ones_like(flat))
    nonzero = hist > 0
    # the count of the highest value present, which PIL leaves out of the step
    top = torch.where(nonzero, torch.arange(256, device=images.device), -1).amax(1, keepdim=True)
    step = (hist.sum(1, keepdim=True) - hist.gather(1, top.clamp(min=0))) // 255
    cumulative = torch.cumsum(hist, 1) - hist  # counts below each value
    lut = ((cumulative + step // 2) // step.clamp(min=1)).clamp(max=255)
    out = lut.gather(1, flat)
    keep = (step == 0).expand_as(flat)  # an image of (nearly) one value is left as it is
    return torch.where(keep, flat, out).to(torch.uint8).view(n, c, h, w)


def _autocontrast(images: torch.Tensor) -> torch.Tensor:
    """PIL's ImageOps.autocontrast (cutoff 0), per image and channel: lo -> 0, hi -> 255, int(x scale + offset)."""
    x = images.double()  # PIL computes its table in Python floats and truncates with int()
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    scale = 255.0 / (hi - lo).clamp(min=1)
    out = (x * scale + (-lo * scale)).clamp(0, 255).floor()
    return torch.where(hi > lo, out.to(torch.uint8), images)


def _sharpness(images: torch.Tensor, factor: float) -> torch.Tensor:
    """PIL's ImageEnhance.Sharpness: blend with the SMOOTH filter ((1 1 1; 1 5 1; 1 1 1) / 13, rounded), whose
    border pixels PIL copies unfiltered."""
    n, c, h, w = images.shape
    kernel = torch.tensor([[1.0, 1, 1], [1, 5, 1], [1, 1, 1]], device=images.device) / 13
    smooth = F.conv2d(images.float().reshape(n * c, 1, h, w), kernel.view(1, 1, 3, 3)).view(n, c, h - 2, w - 2)
    degenerate = images.clone()
    degenerate[:, :, 1:-1, 1:-1] = (smooth + 0.5).floor().clamp(0, 255).to(torch.uint8)
    return _blend(degenerate, images, factor)


def _cutout(images: torch.Tensor, size: float, corners: torch.Tensor) -> torch.Tensor:
    """Their CutoutAbs: corner x0 = int(max(0, u - size/2)) with u = w + (1 - w) r (numpy's uniform(w), r uniform
    on [0, 1): `corners`, (2, N)), the square to min(w, x0 + size), drawn by PIL's rectangle, which includes both
    ends."""
    n, c, h, w = images.shape
    u = corners.to(torch.float64).to(images.device)
    x0 = torch.clamp(w + (1.0 - w) * u[0] - size / 2.0, min=0).floor()
    y0 = torch.clamp(h + (1.0 - h) * u[1] - size / 2.0, min=0).floor()
    x1 = torch.minimum(x0 + size, torch.full_like(x0, w)).floor()  # PIL draws integer coordinates
    y1 = torch.minimum(y0 + size, torch.full_like(y0, h)).floor()
    cols = torch.arange(w, device=images.device).view(1, 1, w)
    rows = torch.arange(h, device=images.device).view(1, h, 1)
    box = ((cols >= x0.view(n, 1, 1)) & (cols <= x1.view(n, 1, 1))
           & (rows >= y0.view(n, 1, 1)) & (rows <= y1.view(n, 1, 1)))
    colour = torch.tensor(CUTOUT_COLOUR[:c], dtype=images.dtype, device=images.device).view(1, c, 1, 1)
    return torch.where(box.unsqueeze(1), colour, images)


def apply_operation(name: str, images: torch.Tensor, value: float, signs: torch.Tensor,
                    corners: torch.Tensor | None = None) -> torch.Tensor:
    """Operation `name` of their list at value `value` on uint8 (N, C, H, W) images; `signs` (N,) of +-1 are the
    sign flips of the geometric operations (ignored by the others), `corners` (2, N) the uniform draws of
    Cutout's corner."""
    n, _, h, w = images.shape
    sign = signs.to(torch.float64).to(images.device)
    zeros = torch.zeros(n, dtype=torch.float64, device=images.device)
    ones = torch.ones_like(zeros)
    if name == "AutoContrast":
        return _autocontrast(images)
    if name == "Equalize":
        return _equalize(images)
    if name == "Invert":
        return 255 - images
    if name == "Posterize":
        bits = max(1, int(value))
        mask = (0xFF << (8 - bits)) & 0xFF
        return images & mask
    if name == "Solarize":
        return torch.where(images >= value, 255 - images, images)
    if name == "SolarizeAdd":
        added = (images.to(torch.int64) + value).clamp(0, 255).to(torch.uint8)  # numpy: int + float, clip, astype
        return torch.where(added >= 128, 255 - added, added)
    if name == "Color":
        return _blend(_pil_grey(images).expand_as(images), images, value) if images.shape[1] == 3 else images
    if name == "Contrast":
        mean = _pil_grey(images).double().mean(dim=(1, 2, 3))
        grey = torch.floor(mean + 0.5).to(torch.uint8).view(n, 1, 1, 1).expand_as(images)
        return _blend(grey, images, value)
    if name == "Brightness":
        return _blend(torch.zeros_like(images), images, value)
    if name == "Sharpness":
        return _sharpness(images, value)
    if name == "Rotate":
        return _pil_affine(images, _rotation_matrices(value * sign, h, w))
    if name == "ShearX":
        return _pil_affine(images, torch.stack([ones, value * sign, zeros, zeros, ones, zeros], 1))
    if name == "ShearY":
        return _pil_affine(images, torch.stack([ones, zeros, zeros, value * sign, ones, zeros], 1))
    if name == "TranslateXabs":
        return _pil_affine(images, torch.stack([ones, zeros, value * sign, zeros, ones, zeros], 1))
    if name == "TranslateYabs":
        return _pil_affine(images, torch.stack([ones, zeros, zeros, zeros, ones, value * sign], 1))
    if name == "CutoutAbs":
        return _cutout(images, value, corners)
    raise ValueError(f"unknown operation {name!r}; their list is {[op[0] for op in OPERATIONS]}")


def authors_randaugment(images: torch.Tensor, magnitude: int, generator: torch.Generator,
                        masked: bool | None = None) -> torch.Tensor:
    """Their RandAugment(2, magnitude) on uint8 (N, C, H, W) images: per image, 2 operations drawn with
    replacement. Draws come from `generator` (on any device). `masked` (default: off the CPU) computes every
    operation on the whole batch and keeps each image's own, which never waits for the device; on the CPU each
    operation runs on the images that drew it alone, which is cheaper there. Both give the same pixels."""
    n, channels = images.shape[:2]
    names = operations_for(channels)
    device = generator.device
    masked = images.device.type != "cpu" if masked is None else masked
    for _ in range(NUM_OPS):
        chosen = torch.randint(0, len(names), (n,), generator=generator, device=device).to(images.device)
        signs = torch.where(torch.rand(n, generator=generator, device=device) > 0.5, -1.0, 1.0).to(images.device)
        corners = torch.rand(2, n, generator=generator, device=device).to(images.device)
        out = images.clone()
        for index, name in enumerate(names):
            value = operation_value(name, magnitude)
            if masked:
                where = (chosen == index).view(n, 1, 1, 1)
                out = torch.where(where, apply_operation(name, images, value, signs, corners), out)
                continue
            picked = (chosen == index).nonzero().squeeze(1)
            if len(picked):
                out[picked] = apply_operation(name, images[picked], value, signs[picked], corners[:, picked])
        images = out
    return images
