"""Tiny generated ImageFolders for tests: each class has its own colour and stripe orientation."""

from __future__ import annotations

import colorsys
import os
import pathlib
from collections.abc import Sequence

import numpy as np
from PIL import Image

from research_systems_core.validation import check_int

__all__ = ["make_image_folder"]


def _class_pattern(label: int, classes: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A size x size x 3 uint8 image: class hue, class stripe angle, random phase, brightness and noise."""
    r, g, b = colorsys.hsv_to_rgb(label / classes, 0.8, 0.9)
    colour = np.array([r, g, b])
    angle = np.pi * label / classes
    yy, xx = np.mgrid[0:size, 0:size] / size
    phase = rng.uniform(0, 2 * np.pi)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)
    image = colour * (0.55 + 0.45 * stripes[..., None]) * rng.uniform(0.8, 1.0)
    image += rng.normal(0.0, 0.05, size=image.shape)
    return (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)


def make_image_folder(
    root: str | os.PathLike[str],
    *,
    classes: int = 3,
    per_class: int = 8,
    size: int = 32,
    seed: int = 0,
    splits: Sequence[str] = ("train", "val"),
) -> pathlib.Path:
    """Write ``root/<split>/class_<k>/<i>.png`` (RGB PNGs) and return ``root``.

    Class folders are zero-padded so ImageFolder's sorted order gives class ``k`` label ``k``. Each
    split draws from its own seeded stream, so val images differ from train images.
    """
    classes = check_int("classes", classes, minimum=2, maximum=1000)
    per_class = check_int("per_class", per_class, minimum=1, maximum=100_000)
    size = check_int("size", size, minimum=4, maximum=1024)
    seed = check_int("seed", seed, minimum=0, maximum=2**32 - 1)
    if isinstance(splits, str) or not splits or not all(isinstance(s, str) and s for s in splits):
        raise TypeError(f"splits must be a non-empty sequence of folder names, got {splits!r}")
    root = pathlib.Path(root)
    width = len(str(classes - 1))
    for split_index, split in enumerate(splits):
        rng = np.random.default_rng([seed, split_index])
        for label in range(classes):
            folder = root / split / f"class_{label:0{width}d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(_class_pattern(label, classes, size, rng)).save(folder / f"{i:05d}.png")
    return root
