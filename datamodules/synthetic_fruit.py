"""A synthetic object-detection dataset in the fruit dataset's VOC layout, for tests and offline runs.

Red ellipses ("apple"), orange ellipses ("orange") and yellow elongated rectangles ("banana") of random sizes, with
overlaps, on noisy textured backgrounds; `train/` and `test/` folders of `*.jpg` with a VOC `*.xml` each.

    python -m datamodules.synthetic_fruit data/synthetic_fruit --train 240 --test 60
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

COLOURS = {"apple": (200, 30, 35), "orange": (245, 140, 20), "banana": (235, 215, 50)}


def voc_xml(filename: str, width: int, height: int, objects: list[tuple[str, tuple[int, int, int, int]]]) -> str:
    parts = [
        f"<annotation><filename>{escape(filename)}</filename>",
        f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>",
    ]
    for name, (x1, y1, x2, y2) in objects:
        parts.append(
            f"<object><name>{escape(name)}</name><difficult>0</difficult><bndbox><xmin>{x1}</xmin>"
            f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        )
    return "".join(parts) + "</annotation>\n"


def draw_scene(rng: random.Random) -> tuple[Image.Image, list[tuple[str, tuple[int, int, int, int]]]]:
    """One image (random size about 320 px) with 1-4 shapes, and its boxes (x1, y1, x2, y2 in pixels)."""
    width, height = rng.randint(280, 400), rng.randint(240, 360)
    coarse = np.random.default_rng(rng.randrange(2**32)).integers(40, 200, (height // 16 + 1, width // 16 + 1, 3))
    background = Image.fromarray(coarse.astype(np.uint8)).resize((width, height), Image.Resampling.BICUBIC)
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0, 18, (height, width, 3))
    image = Image.fromarray(np.clip(np.asarray(background, dtype=np.float64) + noise, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    objects = []
    for _ in range(rng.randint(1, 4)):
        name = rng.choice(list(COLOURS))
        w, h = rng.randint(40, 130), rng.randint(40, 130)
        if name == "banana":
            w, h = (max(w, h), min(w, h) // 2 + 10) if rng.random() < 0.5 else (min(w, h) // 2 + 10, max(w, h))
        x1, y1 = rng.randint(0, width - w), rng.randint(0, height - h)
        box = (x1, y1, x1 + w - 1, y1 + h - 1)
        colour = tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in COLOURS[name])
        (draw.rectangle if name == "banana" else draw.ellipse)(box, fill=colour, outline=(40, 30, 20), width=2)
        objects.append((name, box))
    return image.filter(ImageFilter.GaussianBlur(0.6)), objects


def write_dataset(root: Path, train: int = 240, test: int = 60, seed: int = 0) -> Path:
    rng = random.Random(seed)
    for split, count in (("train", train), ("test", test)):
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, objects = draw_scene(rng)
            name = f"{split}_{i:04d}"
            image.save(folder / f"{name}.jpg", quality=90)
            (folder / f"{name}.xml").write_text(voc_xml(f"{name}.jpg", *image.size, objects))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--train", type=int, default=240)
    parser.add_argument("--test", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(write_dataset(args.root, args.train, args.test, args.seed))


if __name__ == "__main__":
    main()
