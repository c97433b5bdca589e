"""The reference for benches/train_step.rs: one distillation training step on MobileNetV2
at batch 16, 224x224, in PyTorch on 2 threads (teacher forward without gradients,
student forward, KL loss, backward, SGD update). Both networks run BatchNorm in its
inference form, as the Rust executor does.

    pip install torch torchvision   # not a dependency of the crate
    python3 benches/train_step_pytorch.py
"""

import statistics
import time

import torch
import torch.nn.functional as F
import torchvision

BATCH, WARMUP, STEPS = 16, 3, 30

torch.set_num_threads(2)
torch.manual_seed(0)
teacher = torchvision.models.mobilenet_v2().eval()
student = torchvision.models.mobilenet_v2().eval()
optimizer = torch.optim.SGD(student.parameters(), lr=1e-3)
x = torch.randn(BATCH, 3, 224, 224)


def step():
    with torch.no_grad():
        target = teacher(x)
    loss = F.kl_div(
        F.log_softmax(student(x), 1), F.softmax(target, 1), reduction="batchmean"
    )
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


for _ in range(WARMUP):
    step()
rates = []
for _ in range(STEPS):
    start = time.perf_counter()
    step()
    rates.append(BATCH / (time.perf_counter() - start))
quartiles = statistics.quantiles(rates, n=4)
print(
    f"PyTorch {torch.__version__}, 2 threads: {statistics.median(rates):.1f} images/s "
    f"(quartiles {quartiles[0]:.1f}-{quartiles[2]:.1f}) over {STEPS} steps"
)
