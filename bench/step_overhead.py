"""Training-step overhead: headstart's loop against a hand-written PyTorch loop.

Same model (efficientnet_lite0 + new head), same batches (decoded in memory), same AdamW,
same threads; both run warm-up steps first, then alternate timed rounds so machine noise
hits both sides alike.

    .venv/bin/python bench/step_overhead.py [--steps 10] [--batch 16] [--json]
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn

from headstart.backbones import build_backbone
from headstart.training import LoopSettings, Trainer, TransferNet

from _common import emit, machine, parser, quiet


def plain_steps(net: nn.Module, batches, lr: float) -> float:
    """The loop a person writes by hand: forward, loss, backward, clip, step, schedule."""
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    net.train()
    start = time.perf_counter()
    for images, labels in batches:
        images = images.contiguous(memory_format=torch.channels_last)
        loss = loss_fn(net(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        loss.item()
    return time.perf_counter() - start


def headstart_steps(net: TransferNet, batches, lr: float, classes: list[str]) -> float:
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr)
    settings = LoopSettings(epochs=1, label_smoothing=0.1, channels_last=True, train_bn=True)
    trainer = Trainer(net, optimizer, settings, classes)
    trainer.prepare(len(batches))
    start = time.perf_counter()
    trainer.train_epoch(batches)
    return time.perf_counter() - start


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    quiet()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    backbone = build_backbone("efficientnet_lite0")
    size = backbone.contract.input_size
    batches = [(torch.randn(args.batch, 3, size, size), torch.randint(0, 5, (args.batch,))) for _ in range(args.steps)]
    base = TransferNet(backbone.module, nn.Linear(backbone.contract.feature_dim, 5)).to(memory_format=torch.channels_last)
    classes = [str(i) for i in range(5)]
    plain_steps(copy.deepcopy(base), batches[:2], 1e-4)  # warm-up both paths
    headstart_steps(copy.deepcopy(base), batches[:2], 1e-4, classes)
    plain, ours = [], []
    for _ in range(args.rounds):
        plain.append(plain_steps(copy.deepcopy(base), batches, 1e-4))
        ours.append(headstart_steps(copy.deepcopy(base), batches, 1e-4, classes))
    plain_step, our_step = min(plain) / args.steps, min(ours) / args.steps
    ratio = our_step / plain_step
    result = {"machine": machine(args.threads), "plain_step_seconds": plain_step,
              "headstart_step_seconds": our_step, "ratio": ratio, "goal": "<= 1.1",
              "steps": args.steps, "batch": args.batch, "rounds": args.rounds}
    emit(args.json, result, "training-step time, best of rounds", ["loop", "s/step"],
         [["hand-written PyTorch", plain_step], ["headstart Trainer", our_step]],
         [f"ratio headstart / plain: {ratio:.3f} (goal <= 1.1)"])


if __name__ == "__main__":
    main()
