"""The split of the natural photos behind the README's fine-tuning figures ("Recovery by
fine-tuning"): held-out images whose background photos and objects training never sees.

    python3 benches/natural_photos_split.py NATURAL_PHOTOS_DIR OUT_DIR

NATURAL_PHOTOS_DIR holds `photos/`, `objects/` and `objects.csv` (one row per object
image: `file`, `background`, `stamp_groups` separated by `;`). Seeded (0): 4 of the
photos and a quarter of the object groups are held out. OUT_DIR/held gets the object
images on a held-out photo whose groups are all held out; OUT_DIR/train the images on the
other photos whose groups are all trained on, plus those photos themselves, and
OUT_DIR/train_half and OUT_DIR/train_quarter the same with half and a quarter of the
training groups. Images that straddle the split are dropped. Files are symbolic links.
Needs only the standard library.
"""

import csv
import os
import random
import sys


def groups_of(row):
    return set(row["stamp_groups"].split(";"))


def link_all(files, folder):
    os.makedirs(folder, exist_ok=True)
    for source in files:
        os.symlink(os.path.abspath(source), os.path.join(folder, os.path.basename(source)))


def main(root, out):
    rows = list(csv.DictReader(open(os.path.join(root, "objects.csv"))))
    photos = sorted(os.listdir(os.path.join(root, "photos")))
    groups = sorted({g for row in rows for g in groups_of(row)})
    rng = random.Random(0)
    held_photos = set(rng.sample(photos, 4))
    held_groups = set(rng.sample(groups, len(groups) // 4))

    def side(row):
        on_held_photo = row["background"] in held_photos
        if on_held_photo and groups_of(row) <= held_groups:
            return "held"
        if not on_held_photo and not groups_of(row) & held_groups:
            return "train"
        return None

    objects = lambda row: os.path.join(root, "objects", row["file"])
    train_photos = [os.path.join(root, "photos", p) for p in photos if p not in held_photos]
    train_groups = [g for g in groups if g not in held_groups]
    rng.shuffle(train_groups)
    for name, share in [("train", 1), ("train_half", 2), ("train_quarter", 4)]:
        kept = set(train_groups[: len(train_groups) // share])
        chosen = [objects(r) for r in rows if side(r) == "train" and groups_of(r) <= kept]
        link_all(chosen + train_photos, os.path.join(out, name))
        print(f"{name}: {len(chosen)} object images of {len(kept)} groups, {len(train_photos)} photos")
    held = [r for r in rows if side(r) == "held"]
    link_all([objects(r) for r in held], os.path.join(out, "held"))
    seen = set().union(*(groups_of(r) for r in held))
    print(f"held: {len(held)} object images of {len(seen)} groups on photos {sorted(held_photos)}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
