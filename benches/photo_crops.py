"""Crops of the shared natural photos for measuring interval widths (README, "How much
data makes the estimate tight").

    python3 benches/photo_crops.py PHOTOS_DIR OUT_DIR

Writes OUT_DIR/all.npz: `x`, 48 random-resized 224x224 crops (area 8-100 %, aspect
3/4-4/3, bilinear) of each of the 16 photos in a seeded order, uint8 NHWC; `group`, the
photo of each crop; `first_K`, the rows of the first K photos (K = 2, 4, 8, 16), for
`verify --inputs-index`. OUT_DIR/all_ungrouped.npz holds the same without `group`.
Needs numpy and Pillow.
"""
import sys
from pathlib import Path

import numpy as np
from PIL import Image

CROPS_PER_PHOTO = 48


def crops(image, rng):
    width, height = image.size
    while True:
        area = rng.uniform(0.08, 1.0) * width * height
        ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        w, h = int(round(np.sqrt(area * ratio))), int(round(np.sqrt(area / ratio)))
        if w > width or h > height:
            continue
        x, y = rng.integers(0, width - w + 1), rng.integers(0, height - h + 1)
        yield np.asarray(image.crop((x, y, x + w, y + h)).resize((224, 224), Image.BILINEAR))


def main(photo_dir, out):
    photos = sorted(Path(photo_dir).glob("*.jpg"))
    rng = np.random.default_rng(21)
    xs, groups = [], []
    for i in rng.permutation(len(photos)):
        made = crops(Image.open(photos[i]).convert("RGB"), rng)
        xs += [next(made) for _ in range(CROPS_PER_PHOTO)]
        groups += [int(i)] * CROPS_PER_PHOTO
    x = np.stack(xs)
    index = {f"first_{k}": np.arange(CROPS_PER_PHOTO * k, dtype=np.int64) for k in (2, 4, 8, 16)}
    np.savez(Path(out) / "all.npz", x=x, group=np.array(groups, dtype=np.int64), **index)
    np.savez(Path(out) / "all_ungrouped.npz", x=x, **index)


if __name__ == "__main__":
    main(*sys.argv[1:3])
