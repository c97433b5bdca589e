"""Trains a model gated by `onnx-shallow gate` in PyTorch and exports it back to ONNX for
`onnx-shallow optimize TRAINED.onnx OUT.onnx --from-gates`.

The same command runs on one CPU, one GPU, or many processes through torchrun
(DistributedDataParallel):

    python examples/train_gated.py gated.onnx trained.onnx --data train.npz --labels y
    torchrun --nproc_per_node 2 examples/train_gated.py gated.onnx trained.onnx --data train.npz

The loss is Layer Folding's: distillation from the original model (the gated model at
α = 0, frozen), cross-entropy on the labels when given, and the gate penalty
λ·Σ_g w_g·(1 − α_g) with the weights w_g the manifest gives (each group's measured
latency gain, as a share). α is clipped to [0, 1] after every step; a gate that reaches
the threshold is fixed at 1 from then on, so the weights learn to do without it.

Tested with Python 3.11, torch 2.15.0, onnx2torch 1.5.15, onnx 1.23.2 (CPU); the pins are
in examples/requirements.txt (`pip install -r examples/requirements.txt`).
"""

import argparse
import json
import os

import numpy as np
import onnx
import torch
import torch.distributed as dist
import torch.nn.functional as F
from onnx import TensorProto, helper
from onnx2torch import convert
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

MANIFEST_KEY = "onnx_shallow.gates"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("gated", help="the model `onnx-shallow gate` wrote")
    p.add_argument("output", help="where to write the trained gated model")
    p.add_argument("--data", help=".npz holding the inputs (and labels); without it, --epochs 0 only exports")
    p.add_argument("--inputs", default="x", help="the array of inputs in --data")
    p.add_argument("--labels", help="the array of integer labels in --data (adds cross-entropy)")
    p.add_argument("--train-index", help="an integer array in --data: the rows to train on")
    p.add_argument("--eval-index", help="an integer array in --data: the rows to measure on")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=32, help="samples per step, over all processes")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW step size of the weights")
    p.add_argument("--gate-lr", type=float, default=0.05, help="Adam step size of the gates")
    p.add_argument("--penalty", type=float, default=0.5, help="λ, the weight of the gate penalty")
    p.add_argument("--label-weight", type=float, default=1.0)
    p.add_argument("--threshold", type=float, help="default: the manifest's")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def manifest_of(model):
    for entry in model.metadata_props:
        if entry.key == MANIFEST_KEY:
            return json.loads(entry.value)
    raise SystemExit(f"no '{MANIFEST_KEY}' metadata: not a model written by `onnx-shallow gate`")


def gates_as_inputs(model, manifest):
    """The gated model with each α initializer turned into a graph input, so that the
    training wraps them as parameters of its own (one per group, shared by the group's
    activations) instead of constants."""
    names = [group["gate"] for group in manifest["groups"]]
    kept = [t for t in model.graph.initializer if t.name not in names]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    for name in names:
        model.graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, []))
    return model


class GatedNet(nn.Module):
    def __init__(self, converted, groups):
        super().__init__()
        self.net = converted
        self.alphas = nn.ParameterList([nn.Parameter(torch.zeros(())) for _ in range(groups)])

    def forward(self, x):
        return self.net(x, *self.alphas)


def distillation(student, teacher):
    """KL from the teacher's class probabilities for [N, C] outputs, squared error
    (relative to the teacher's scale) otherwise."""
    student = student if isinstance(student, (tuple, list)) else [student]
    teacher = teacher if isinstance(teacher, (tuple, list)) else [teacher]
    loss = 0.0
    for s, t in zip(student, teacher):
        if s.dim() == 2:
            loss = loss + F.kl_div(F.log_softmax(s, 1), F.log_softmax(t, 1), log_target=True, reduction="batchmean")
        else:
            loss = loss + F.mse_loss(s, t) / t.pow(2).mean().clamp_min(1e-12)
    return loss


def first(outputs):
    return outputs[0] if isinstance(outputs, (tuple, list)) else outputs


def main():
    args = parse_args()
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if torch.cuda.is_available() else torch.device("cpu")
    if distributed:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cpu":
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // dist.get_world_size()))
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    torch.manual_seed(args.seed)

    gated = onnx.load(args.gated)
    manifest = manifest_of(gated)
    threshold = args.threshold if args.threshold is not None else manifest["threshold"]
    weights = torch.tensor([g["weight"] for g in manifest["groups"]], device=device)
    input_name = gated.graph.input[0].name
    output_names = [o.name for o in gated.graph.output]
    student = GatedNet(convert(gates_as_inputs(gated, manifest)), len(manifest["groups"])).to(device)
    teacher = GatedNet(convert(gates_as_inputs(onnx.load(args.gated), manifest)), len(manifest["groups"])).to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    if args.data is None:
        if args.epochs != 0:
            raise SystemExit("--data is needed to train (or --epochs 0 to convert and export only)")
        if rank == 0:
            export(student, example_input(gated), input_name, output_names, gated.opset_import[0].version, args.output)
            print(f"wrote {args.output}")
        return
    data = np.load(args.data)
    x = torch.from_numpy(np.asarray(data[args.inputs], dtype=np.float32))
    y = torch.from_numpy(np.asarray(data[args.labels], dtype=np.int64)) if args.labels else torch.zeros(len(x), dtype=torch.int64)
    rows = lambda key: torch.from_numpy(np.asarray(data[key], dtype=np.int64)) if key else torch.arange(len(x))
    train = TensorDataset(x[rows(args.train_index)], y[rows(args.train_index)])
    sampler = DistributedSampler(train, seed=args.seed) if distributed else None
    loader = DataLoader(train, batch_size=max(1, args.batch // world), shuffle=sampler is None, sampler=sampler, drop_last=len(train) >= args.batch)

    model = DistributedDataParallel(student) if distributed else student
    weight_params = [p for n, p in student.named_parameters() if not n.startswith("alphas")]
    optimizer = torch.optim.AdamW(
        [{"params": weight_params, "lr": args.lr}, {"params": list(student.alphas), "lr": args.gate_lr, "weight_decay": 0.0}]
    )
    steps = args.epochs * len(loader)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[args.lr, args.gate_lr], total_steps=max(1, steps), pct_start=0.05)
    crossed = torch.zeros(len(manifest["groups"]), dtype=torch.bool, device=device)
    for epoch in range(args.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        model.train()
        for inputs, labels in loader:
            inputs, labels = inputs.to(device), labels.to(device)
            with torch.no_grad():
                target = teacher(inputs)
            outputs = model(inputs)
            alphas = torch.stack(list(student.alphas))
            loss = distillation(outputs, target) + args.penalty * (weights * (1 - alphas)).sum()
            if args.labels:
                loss = loss + args.label_weight * F.cross_entropy(first(outputs), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            with torch.no_grad():
                for g, alpha in enumerate(student.alphas):
                    alpha.clamp_(0.0, 1.0)
                    crossed[g] |= bool(alpha >= threshold)
                    if crossed[g]:
                        alpha.fill_(1.0)
        if rank == 0:
            values = " ".join(f"{a.item():.2f}" for a in student.alphas)
            print(f"epoch {epoch + 1}/{args.epochs}: loss {loss.item():.4f}, gates {values}", flush=True)

    if rank == 0:
        if args.eval_index:
            report(student, teacher, x[rows(args.eval_index)].to(device), y[rows(args.eval_index)] if args.labels else None)
        export(student, x[:1].to(device), input_name, output_names, gated.opset_import[0].version, args.output)
        print(f"wrote {args.output}")
    if distributed:
        dist.destroy_process_group()


def example_input(model):
    """Zeros of the model's input dims, batch 1 where the dims are symbolic."""
    dims = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    return torch.zeros(dims)


@torch.no_grad()
def report(student, teacher, x, labels):
    student.eval()
    s, t = first(student(x)).argmax(1).cpu(), first(teacher(x)).argmax(1).cpu()
    line = f"held out ({len(x)} samples): agreement with the original {100 * (s == t).float().mean():.2f} %"
    if labels is not None:
        line += f", accuracy {100 * (s == labels).float().mean():.2f} % (original {100 * (t == labels).float().mean():.2f} %)"
    print(line)


def export(student, example, input_name, output_names, opset, path):
    student.eval().cpu()
    torch.onnx.export(
        student,
        (example.cpu(),),
        path,
        input_names=[input_name],
        output_names=output_names,
        dynamic_axes={input_name: {0: "batch"}, **{name: {0: "batch"} for name in output_names}},
        opset_version=opset,
        dynamo=False,
    )


if __name__ == "__main__":
    main()
