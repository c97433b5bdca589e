#!/usr/bin/env python3
"""Reference fine-tune in PyTorch of a model with some activations removed, following the
recipe of `onnx-shallow optimize --finetune --augment --linearize PATTERN` step for step,
so that what our trainer reaches can be told apart from what the data allows.

The ONNX model is converted with onnx2torch. The teacher is the converted model as it
is, frozen. The student is a copy in which every activation (Relu, Clip, LeakyRelu,
PRelu, HardSwish node) whose ONNX node name matches one of the --linearize patterns
passes its input through. As in onnx-shallow, only the weights downstream of a removed
activation train: those of every layer that reads, directly or through other layers,
the input of a removed activation. Everything upstream of the first one stays as it is.

The recipe (onnx-shallow's src/gates/train.rs, loss.rs, src/calib/augment.rs,
preprocess.rs, dataset.rs, random.rs):

- Loss: the mean over the batch of KL(softmax(teacher) || softmax(student)) on the
  logits, temperature 1, both run on the same crop; computed in float64.
- Optimiser: Adam with decoupled weight decay (AdamW), betas (0.9, 0.999), eps 1e-8,
  bias-corrected; weight decay 0 unless --weight-decay is given.
- Step size at step s (0-based) of S: warm-up W = round(warmup * S) steps (rounded half
  away from zero), lr * (s + 1) / W while s < W, then lr * (1 + cos(pi * t)) / 2 with
  t = (s - W) / (S - W), down to zero.
- Batches: an epoch is the training images in an order shuffled by (seed, epoch), cut
  into batches of --batch; its last batch holds the remainder (2 images for 1,554 at 16).
- Training crops: a window of the decoded image as stored, its area a uniform fraction
  of the image's in [0.08, 1] and its aspect ratio log-uniform in [3/4, 4/3], up to 10
  tries and then the centre (torchvision's RandomResizedCrop); resampled to 224 x 224
  with an antialiased bilinear filter (PIL's), mirrored with probability 1/2. The random
  streams are onnx-shallow's (SplitMix64, one stream per epoch and per (epoch, image)),
  so a run with the same --seed shuffles and crops exactly as onnx-shallow does.
- Preprocessing: RGB / 255, minus the ImageNet mean (0.485, 0.456, 0.406), over the std
  (0.229, 0.224, 0.225).
- Held-out images (never augmented): the short side resized to 256 (antialiased
  bilinear, the long side rounded down), then the centre 224 x 224 (offsets rounded
  down): what onnx-shallow's `imagenet` preset does to a folder of images that are not
  224 x 224.
- Held-out measurement: the fraction of held-out images on which the student's top-1
  class is the teacher's (agreement), and the mean KL over them. It is printed before
  training (step 0), every --eval-every steps and at the last step; "best" is the
  evaluation after step 0 with the most agreement, then the least KL (the weights
  onnx-shallow keeps).
- With --seen N, the same measurement on N training images spread evenly over the
  training list, preprocessed like the held-out images (not part of onnx-shallow's
  recipe: it tells a student that fits what it was trained on from one that does not).

Images/s counts training crops over the time spent in training steps (reading and
cropping the images, teacher and student, update), evaluations excluded.

Example (the paper's 5-block fold of MobileNetV2):

    pip install torch onnx onnx2torch numpy pillow   # not dependencies of the crate
    python3 benches/finetune_pytorch.py mobilenet_v2.onnx train/ held/ \\
        --linearize '/features/features.2/*' --linearize '/features/features.4/*' \\
        --linearize '/features/features.8/*' --linearize '/features/features.9/*' \\
        --linearize '/features/features.10/*' --steps 500 --eval-every 50
"""

import argparse
import copy
import json
import math
import os
import re
import sys
import time

import numpy as np
import onnx
import onnx2torch
import torch
import torch.nn.functional as F
from PIL import Image

ACTIVATIONS = {"Relu", "Clip", "LeakyRelu", "PRelu", "HardSwish"}
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg"}
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
INPUT_SIDE = 224
EVAL_RESIZE = 256
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
CROP_ATTEMPTS = 10
BETAS = (0.9, 0.999)
EPS = 1e-8
MASK64 = (1 << 64) - 1


# --- onnx-shallow's random streams -----------------------------------------------------


class SplitMix64:
    """onnx-shallow's generator (src/calib/random.rs)."""

    def __init__(self, seed):
        self.state = seed & MASK64

    def next_u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def uniform(self):
        """Uniform in (0, 1]."""
        return ((self.next_u64() >> 11) + 1) / float(1 << 53)

    @staticmethod
    def derived(seed, parts):
        """A stream of its own for each tuple of parts (an epoch, an image)."""
        state = SplitMix64(seed).next_u64()
        for part in parts:
            state = SplitMix64(state ^ part).next_u64()
        return SplitMix64(state)


def shuffled(n, rng):
    """0..n in a Fisher-Yates order drawn from rng, as onnx-shallow shuffles."""
    items = list(range(n))
    for i in range(n - 1, 0, -1):
        j = rng.next_u64() % (i + 1)
        items[i], items[j] = items[j], items[i]
    return items


def round_half_away(x):
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


# --- images ------------------------------------------------------------------------------


def list_images(root):
    """The images under root, subfolders included, in path order."""
    found = []
    for entry in sorted(os.listdir(root)):
        path = os.path.join(root, entry)
        if os.path.isdir(path):
            found.extend(list_images(path))
        elif os.path.splitext(entry)[1].lower() in IMAGE_EXTENSIONS:
            found.append(path)
    return found


def decode(path):
    """[3, H, W] float RGB pixels, 0-255."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).float()


def resample(image, height, width):
    """Antialiased bilinear resize of [3, H, W] (PIL's filter), each axis only if it changes."""
    if image.shape[1:] == (height, width):
        return image
    return F.interpolate(
        image[None], size=(height, width), mode="bilinear", align_corners=False, antialias=True
    )[0]


def normalise(image):
    return (image / 255.0 - MEAN) / STD


def draw_window(height, width, rng):
    """A random-resized-crop window (top, left, h, w, flip), as onnx-shallow draws it."""
    area = float(height * width)
    log_r0, log_r1 = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    for _ in range(CROP_ATTEMPTS):
        target = area * (CROP_SCALE[0] + (CROP_SCALE[1] - CROP_SCALE[0]) * rng.uniform())
        aspect = math.exp(log_r0 + (log_r1 - log_r0) * rng.uniform())
        w = round_half_away(math.sqrt(target * aspect))
        h = round_half_away(math.sqrt(target / aspect))
        if 1 <= w <= width and 1 <= h <= height:
            top = rng.next_u64() % (height - h + 1)
            left = rng.next_u64() % (width - w + 1)
            return top, left, h, w, rng.uniform() <= 0.5
    flip = rng.uniform() <= 0.5
    ratio = width / height
    if ratio < CROP_RATIO[0]:
        h, w = round_half_away(width / CROP_RATIO[0]), width
    elif ratio > CROP_RATIO[1]:
        h, w = height, round_half_away(height * CROP_RATIO[1])
    else:
        h, w = height, width
    h, w = min(max(h, 1), height), min(max(w, 1), width)
    return (height - h) // 2, (width - w) // 2, h, w, flip


def training_crop(path, rng):
    image = decode(path)
    top, left, h, w, flip = draw_window(image.shape[1], image.shape[2], rng)
    crop = resample(image[:, top : top + h, left : left + w], INPUT_SIDE, INPUT_SIDE)
    if flip:
        crop = crop.flip(-1)
    return normalise(crop)


def held_out_image(path):
    image = decode(path)
    h, w = image.shape[1:]
    if h <= w:
        size = (EVAL_RESIZE, w * EVAL_RESIZE // h)
    else:
        size = (h * EVAL_RESIZE // w, EVAL_RESIZE)
    image = resample(image, *size)
    top, left = (size[0] - INPUT_SIDE) // 2, (size[1] - INPUT_SIDE) // 2
    return normalise(image[:, top : top + INPUT_SIDE, left : left + INPUT_SIDE])


# --- models ------------------------------------------------------------------------------


class PassThrough(torch.nn.Module):
    """A removed activation: its input, unchanged."""

    def forward(self, x, *_bounds):
        return x


def glob(pattern):
    """onnx-shallow's --linearize pattern: '*' any run of characters ('/' included), '?'
    one character, the whole name matched (so a prefix is written PREFIX*)."""
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.DOTALL)


def build_models(model_path, patterns):
    """(teacher, student, removed node names, trainable parameters by module name)."""
    proto = onnx.load(model_path)
    activations = [n for n in proto.graph.node if n.op_type in ACTIVATIONS]
    globs = [glob(p) for p in patterns]
    for pattern, compiled in zip(patterns, globs):
        if not any(compiled.fullmatch(n.name) for n in activations):
            sys.exit(f"--linearize '{pattern}' names no activation of {model_path}")
    removed = [n for n in activations if any(g.fullmatch(n.name) for g in globs)]

    teacher = onnx2torch.convert(proto, attach_onnx_mapping=True)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = copy.deepcopy(teacher)

    module_of_output = {
        m.onnx_mapping.outputs[0]: name
        for name, m in student.named_children()
        if getattr(m, "onnx_mapping", None) and m.onnx_mapping.outputs
    }
    removed_modules = [module_of_output[n.output[0]] for n in removed]
    fx_nodes = {n.target: n for n in student.graph.nodes if n.op == "call_module"}
    # The layers downstream of a removed activation's input train, as in onnx-shallow.
    region, stack = set(), []
    for name in removed_modules:
        stack.extend(fx_nodes[name].args[0].users)
    while stack:
        node = stack.pop()
        if node not in region:
            region.add(node)
            stack.extend(node.users)
    for name in removed_modules:
        student.add_module(name, PassThrough())
    trainable = {}
    for node in student.graph.nodes:
        if node in region and node.op == "call_module":
            for p_name, p in student.get_submodule(node.target).named_parameters():
                p.requires_grad_(True)
                trainable[f"{node.target}.{p_name}"] = p
    return teacher, student, [n.name for n in removed], trainable


# --- the recipe --------------------------------------------------------------------------


def kl_mean(teacher_logits, student_logits):
    """Mean over the batch of KL(softmax(teacher) || softmax(student)), in float64."""
    log_p = F.log_softmax(teacher_logits.double(), dim=1)
    log_q = F.log_softmax(student_logits.double(), dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()


def lr_at(step, steps, peak, warmup_fraction):
    warmup = round_half_away(warmup_fraction * steps)
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(steps - warmup, 1)
    return peak * 0.5 * (1.0 + math.cos(math.pi * t))


@torch.no_grad()
def evaluate(student, images, teacher_logits, batch):
    """Top-1 agreement with the teacher, mean KL, and how many distinct classes the
    student's top-1 takes over the images (a collapsed student takes few)."""
    student.eval()
    agreeing, kl_sum, classes = 0, 0.0, set()
    for start in range(0, len(images), batch):
        part = images[start : start + batch]
        teacher = teacher_logits[start : start + batch]
        logits = student(part)
        agreeing += int((logits.argmax(1) == teacher.argmax(1)).sum())
        kl_sum += float(kl_mean(teacher, logits)) * len(part)
        classes.update(logits.argmax(1).tolist())
    student.train()
    n = len(images)
    return agreeing / n, kl_sum / n, len(classes)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help="the ONNX model (the teacher)")
    parser.add_argument("train", help="folder of training images (PNG, JPEG)")
    parser.add_argument("held", help="folder of held-out images, never trained on")
    parser.add_argument(
        "--linearize",
        action="append",
        required=True,
        metavar="PATTERN",
        help="activations to remove, by ONNX node name: '*' any run of characters ('/' "
        "included), '?' one character, matched against the whole name (a prefix: PREFIX*); "
        "repeatable",
    )
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-5, help="peak step size (--weight-lr)")
    parser.add_argument(
        "--warmup", type=float, default=0.05, help="fraction of the steps the step size warms up over"
    )
    parser.add_argument("--weight-decay", type=float, default=0.0, help="decoupled, per unit of step size")
    parser.add_argument(
        "--eval-every", type=int, default=None, help="held-out measurement period (default: steps / 10)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0, help="shuffling and crops, as onnx-shallow's --seed")
    parser.add_argument(
        "--seen",
        type=int,
        default=0,
        metavar="N",
        help="also measure on N training images, preprocessed like the held-out ones",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the measurements here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    teacher, student, removed, trainable = build_models(args.model, args.linearize)
    train_files = list_images(args.train)
    held_files = list_images(args.held)
    batch = max(1, min(args.batch, len(train_files)))
    steps = args.steps
    eval_every = max(1, args.eval_every or math.ceil(steps / 10))
    per_epoch = math.ceil(len(train_files) / batch)
    print(f"removed {len(removed)} activations: {', '.join(removed)}")
    print(
        f"trainable: {len(trainable)} tensors, {sum(p.numel() for p in trainable.values()):,} weights "
        f"(first: {next(iter(trainable))})"
    )
    print(
        f"data: {len(train_files)} training images, {len(held_files)} held out; {steps} steps of {batch} "
        f"= {steps * batch} crops, {per_epoch} batches per epoch; lr {args.lr:g}, warm-up {args.warmup:g}, "
        f"weight decay {args.weight_decay:g}, seed {args.seed}, {torch.get_num_threads()} thread(s)"
    )

    held_images = torch.stack([held_out_image(f) for f in held_files])
    with torch.no_grad():
        teacher_held = torch.cat([teacher(held_images[s : s + batch]) for s in range(0, len(held_files), batch)])
    seen_rows = sorted({round(i * (len(train_files) - 1) / max(args.seen - 1, 1)) for i in range(args.seen)})
    seen_images = torch.stack([held_out_image(train_files[r]) for r in seen_rows]) if seen_rows else None
    if seen_rows:
        with torch.no_grad():
            teacher_seen = torch.cat([teacher(seen_images[s : s + batch]) for s in range(0, len(seen_rows), batch)])

    optimizer = torch.optim.AdamW(
        list(trainable.values()), lr=args.lr, betas=BETAS, eps=EPS, weight_decay=args.weight_decay
    )
    evaluations = []

    def record(step, train_kl):
        agreement, kl, classes = evaluate(student, held_images, teacher_held, batch)
        entry = {
            "step": step,
            "crops": step * batch,
            "agreement": agreement,
            "held_kl": kl,
            "held_classes": classes,
            "train_kl": train_kl,
        }
        seen = ""
        if seen_rows:
            entry["seen_agreement"], entry["seen_kl"], _ = evaluate(student, seen_images, teacher_seen, batch)
            seen = f"seen agreement {100 * entry['seen_agreement']:6.2f} %  seen KL {entry['seen_kl']:.4f}  "
        evaluations.append(entry)
        train = "-" if train_kl is None else f"{train_kl:.4f}"
        rate = f"{crops_seen / train_seconds:.2f} img/s" if train_seconds > 0 else "-"
        print(
            f"step {step:5d}/{steps}  crops {step * batch:6d}  held-out agreement {100 * agreement:6.2f} %  "
            f"held-out KL {kl:.4f} ({classes} classes)  {seen}train KL {train}  {rate}  {time.perf_counter() - started:7.0f} s",
            flush=True,
        )

    crops_seen, train_seconds = 0, 0.0
    record(0, None)
    order_epoch, order = None, None
    window_loss, window_samples = 0.0, 0
    epoch_losses = {}
    for step in range(steps):
        tick = time.perf_counter()
        epoch = step // per_epoch
        if epoch != order_epoch:
            order_epoch, order = epoch, shuffled(len(train_files), SplitMix64.derived(args.seed, [epoch]))
        within = step % per_epoch
        rows = order[within * batch : (within + 1) * batch]
        images = torch.stack(
            [training_crop(train_files[row], SplitMix64.derived(args.seed, [epoch, row])) for row in rows]
        )
        with torch.no_grad():
            targets = teacher(images)
        loss = kl_mean(targets, student(images))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, args.lr, args.warmup)
        optimizer.step()
        train_seconds += time.perf_counter() - tick
        crops_seen += len(rows)
        value = float(loss.detach())
        window_loss += value * len(rows)
        window_samples += len(rows)
        total, count = epoch_losses.get(epoch, (0.0, 0))
        epoch_losses[epoch] = (total + value * len(rows), count + len(rows))
        done = step + 1
        if done % eval_every == 0 or done == steps:
            record(done, window_loss / window_samples)
            window_loss, window_samples = 0.0, 0

    wall = time.perf_counter() - started
    trained = [e for e in evaluations if e["step"] > 0]
    best = max(trained, key=lambda e: (e["agreement"], -e["held_kl"]))
    per_epoch_kl = [total / count for total, count in (epoch_losses[e] for e in sorted(epoch_losses))]
    print(f"training KL per epoch: {', '.join(f'{v:.3f}' for v in per_epoch_kl)}")
    print(
        f"step 0: agreement {100 * evaluations[0]['agreement']:.2f} %, KL {evaluations[0]['held_kl']:.4f}; "
        f"last (step {steps}): agreement {100 * evaluations[-1]['agreement']:.2f} %, KL {evaluations[-1]['held_kl']:.4f}; "
        f"best (step {best['step']}): agreement {100 * best['agreement']:.2f} %, KL {best['held_kl']:.4f}"
    )
    print(f"teacher's top-1 takes {len(set(teacher_held.argmax(1).tolist()))} classes over the held-out images")
    print(f"{crops_seen / train_seconds:.2f} training images/s; wall time {wall:.0f} s")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(
                {
                    "model": args.model,
                    "linearize": args.linearize,
                    "removed": removed,
                    "trainable_weights": sum(p.numel() for p in trainable.values()),
                    "steps": steps,
                    "batch": batch,
                    "lr": args.lr,
                    "warmup": args.warmup,
                    "weight_decay": args.weight_decay,
                    "seed": args.seed,
                    "seen_images": len(seen_rows),
                    "threads": torch.get_num_threads(),
                    "evaluations": evaluations,
                    "best_step": best["step"],
                    "train_kl_per_epoch": per_epoch_kl,
                    "images_per_second": crops_seen / train_seconds,
                    "wall_seconds": wall,
                },
                out,
                indent=1,
            )


if __name__ == "__main__":
    main()
