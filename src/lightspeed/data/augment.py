"""Batched augmentation on tensors: one call per batch, on whatever device the batch lives.

Per-sample PIL transforms cost a Python call per image; these cost a few tensor ops per batch,
so they run as well on a GPU-resident data set as on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lightspeed.errors import ConfigError


def random_flip(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Flips each image left-right with probability 1/2."""
    mask = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
    return torch.where(mask[:, None, None, None], x.flip(3), x)


def random_crop(x: Tensor, padding: int, generator: torch.Generator | None = None) -> Tensor:
    """Pads by ``padding`` (reflect) and crops back to the input size at a random offset per image.

    Two gathers along H then W; no Python loop over the batch.
    """
    b, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4, mode="reflect")
    off = torch.randint(0, 2 * padding + 1, (2, b), device=x.device, generator=generator)
    rows = (torch.arange(h, device=x.device)[None, :] + off[0][:, None])[:, None, :, None]
    cols = (torch.arange(w, device=x.device)[None, :] + off[1][:, None])[:, None, None, :]
    padded = padded.gather(2, rows.expand(b, c, h, w + 2 * padding))
    return padded.gather(3, cols.expand(b, c, h, w))


@dataclass(eq=False)
class BatchAugment:
    """Crop-with-padding and/or horizontal flip applied to whole batches.

    Args:
        flip: random left-right flips.
        crop_padding: pixels of reflect padding for the random crop; 0 turns cropping off.
    """

    flip: bool = True
    crop_padding: int = 0

    @property
    def active(self) -> bool:
        return self.flip or self.crop_padding > 0

    def check(self, image_size: list[int]) -> None:
        """ConfigError when the crop's padding is not smaller than the images."""
        if self.crop_padding and self.crop_padding >= min(image_size):
            raise ConfigError(
                f"data.crop_padding={self.crop_padding} must be smaller than the "
                f"images ({image_size[0]}x{image_size[1]})"
            )

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if self.crop_padding > 0:
            x = random_crop(x, self.crop_padding, generator)
        if self.flip:
            x = random_flip(x, generator)
        return x
