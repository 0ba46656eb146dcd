"""Tiny real training runs (CPU, a second or less each) that reproduce the failures of the runtime checks.

Imported by the tests (in-process, under `watch()`), and run as a script by the CLI tests:
    python runtime_scenarios.py NAME [--trace FILE]   (or `trainlint run runtime_scenarios.py NAME`)
Every scenario returns the list of its losses (floats) so that runs can be compared.
"""

from __future__ import annotations

import json
import sys
import warnings
from typing import Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def _regression_data(n: int = 1010, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = x[:, :2].sum(1, keepdim=True) + 0.1 * torch.randn(n, 1, generator=g)
    return TensorDataset(x, y)


def _batches(loader, steps: int):
    """The loader's batches, pass after pass (each a new iterator, as an epoch loop makes), until `steps`."""
    seen = 0
    while True:
        for batch in loader:
            yield batch
            seen += 1
            if seen >= steps:
                return


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))


def healthy(epochs: int = 4, seed: int = 0):
    """A correct loop: zero_grad, mean loss, backward, step; 1010 samples in batches of 100."""
    torch.manual_seed(seed)
    loader = DataLoader(_regression_data(seed=seed), batch_size=100, shuffle=True)
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(xb), yb)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return losses


def short_batch_double_division(epochs: int = 4, seed: int = 0):
    """TL104: 1010 samples, batch 100, the mean loss divided by the batch length again."""
    torch.manual_seed(seed)
    loader = DataLoader(_regression_data(seed=seed), batch_size=100, shuffle=True)
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    losses = []
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(xb), yb) / len(xb)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return losses


class LogProb(nn.Module):
    """log(softmax(x)) in two steps: the probability underflows to 0 and its log is -inf."""

    def forward(self, x):
        return torch.log(torch.softmax(x, dim=-1))


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 16), nn.ReLU())
        self.head = nn.Linear(16, 3)
        self.log_prob = LogProb()

    def forward(self, x):
        return self.log_prob(self.head(self.body(x)))


def log_underflow(steps: int = 12, bad_step: int = 6):
    """TL101: an outlier batch makes the logits huge; softmax underflows, log(0) = -inf, loss = inf."""
    torch.manual_seed(0)
    model = Classifier()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for step in range(steps):
        x = torch.randn(32, 4)
        y = torch.randint(0, 3, (32,))
        if step == bad_step:
            x = x * 1e4
        opt.zero_grad()
        loss = nn.functional.nll_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def nan_gradient(steps: int = 10, bad_step: int = 4):
    """TL102: a Euclidean distance through sqrt(); a pair of identical inputs gives sqrt'(0) * 0 = NaN
    in the backward pass while the loss stays finite."""
    torch.manual_seed(0)
    embed = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4))
    opt = torch.optim.SGD(embed.parameters(), lr=0.1)
    losses = []
    for step in range(steps):
        a, b = torch.randn(16, 6), torch.randn(16, 6)
        if step == bad_step:
            b[3] = a[3]
        dist = torch.sqrt(((embed(a) - embed(b)) ** 2).sum(-1))
        loss = torch.relu(1.0 - dist).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def no_zero_grad(steps: int = 20):
    """TL103: the gradients are never cleared."""
    torch.manual_seed(0)
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.001)
    losses = []
    for _ in range(steps):
        x = torch.randn(16, 8)
        loss = model(x).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def accumulation(steps: int = 10, accumulate: int = 4, clear: str = "zero_grad"):
    """Intended gradient accumulation: `accumulate` backward() calls, one step, then clear."""
    torch.manual_seed(0)
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    losses = []
    for _ in range(steps):
        for _ in range(accumulate):
            x = torch.randn(16, 8)
            loss = model(x).pow(2).mean() / accumulate
            loss.backward()
            losses.append(loss.item())
        opt.step()
        if clear == "zero_grad":
            opt.zero_grad()
        elif clear == "zero_grad_keep":
            opt.zero_grad(set_to_none=False)
        elif clear == "model":
            model.zero_grad()
        elif clear == "none_assign":
            for p in model.parameters():
                p.grad = None
        elif clear == "in_place":
            for p in model.parameters():
                p.grad.zero_()
    return losses


def lr_spike(steps: int = 45, at: int = 25):
    """TL105: a schedule bug sets the learning rate 500x too high; the gradients explode."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    losses = []
    for step in range(steps):
        if step == at:
            for group in opt.param_groups:
                group["lr"] = 5.0
        x = torch.randn(64, 8)
        y = x.sum(1, keepdim=True)
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if not torch.isfinite(loss):
            break
    return losses


def dice_loss(logits, target, smooth: float = 1.0):
    """Dice loss with the smoothing term in numerator and denominator (the MONAI report)."""
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    inter = (p * t).sum(1)
    den = p.sum(1) + t.sum(1)
    return (1 - (2 * inter + smooth) / (den + smooth)).mean()


def dice_collapse(steps: int = 80):
    """TL106: mostly empty masks, Dice with smooth in the numerator: predicting "empty" everywhere is
    rewarded, the sigmoid saturates, the gradients go to ~0 while the loss on the non-empty masks stays."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(steps):
        x = torch.randn(8, 1, 16, 16)
        t = torch.zeros(8, 1, 16, 16)
        t[:2, :, 4:8, 4:8] = (torch.rand(2, 1, 4, 4) > 0.5).float()
        opt.zero_grad()
        loss = dice_loss(model(x), t)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def fp16_adam(steps: int = 5):
    """TL107: fp16 parameters with Adam's default eps=1e-8 (0 in fp16)."""
    torch.manual_seed(0)
    model = nn.Linear(8, 1).half()
    opt = torch.optim.Adam(model.parameters())
    losses = []
    for _ in range(steps):
        x = torch.randn(16, 8).half()
        opt.zero_grad()
        loss = model(x).float().pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def bf16_adam(steps: int = 5):
    """No TL107: eps=1e-8 is representable in bfloat16."""
    torch.manual_seed(0)
    model = nn.Linear(8, 1).to(torch.bfloat16)
    opt = torch.optim.Adam(model.parameters())
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(16, 8).to(torch.bfloat16)).float().pow(2).mean().backward()
        opt.step()
    return []


def _blobs(n: int = 515, classes: int = 10, dim: int = 16, seed: int = 0, spread: float = 3.0):
    """A separable classification task: `classes` Gaussian blobs in `dim` dimensions."""
    g = torch.Generator().manual_seed(seed)
    centers = spread * torch.randn(classes, dim, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    x = centers[y] + torch.randn(n, dim, generator=g)
    return TensorDataset(x, y)


def _classifier(dim: int = 16, classes: int = 10, hidden: int = 32) -> nn.Module:
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, classes))


def classifier_short_batch(epochs: int = 8, seed: int = 0, n: int = 515, batch_size: int = 64):
    """Healthy: mean cross-entropy, 515 samples in batches of 64 (a last batch of 3). Once the model
    fits, the 3-sample batch's loss is often near 0: a dip, not a spike."""
    torch.manual_seed(seed)
    loader = DataLoader(_blobs(n=n, seed=seed), batch_size=batch_size, shuffle=True)
    model = _classifier()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return losses


def dice_fixed(steps: int = 120, seed: int = 0, prior_bias: float = -4.6, lr: float = 0.003):
    """Healthy: the corrected Dice loss (smooth only in the denominator) on sparse masks; the gradient
    norm grows several-fold from a small start as the model begins to find the masks."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1))
    with torch.no_grad():
        model[2].bias.fill_(prior_bias)  # foreground prior ~1% (the usual init for sparse masks)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        t = torch.zeros(8, 1, 16, 16)
        for i in range(8):
            r, c = torch.randint(0, 12, (2,), generator=g).tolist()
            t[i, :, r:r + 4, c:c + 4] = 1.0
        x = t + 0.5 * torch.randn(8, 1, 16, 16, generator=g)
        opt.zero_grad()
        p = torch.sigmoid(model(x)).flatten(1)
        tt = t.flatten(1)
        loss = (1 - (2 * (p * tt).sum(1)) / (p.sum(1) + tt.sum(1) + 1.0)).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def full_batch_adam(steps: int = 240, seed: int = 0, lr: float = 0.03):
    """Healthy: full-batch Adam on a small regression until it converges; near the optimum the tiny
    gradient norm rises tenfold (0.02 -> 0.4) for a few steps while the loss stays near its minimum."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 8, generator=g)
    y = torch.sin(2 * x[:, :1]) + x[:, 1:2] ** 2
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def lr_too_high(steps: int = 150, lr: float = 1.0, seed: int = 1, divide_by: float = 0.0):
    """A learning rate far too high (Adam, lr=1): the loss explodes in the first steps, no NaN, the
    ReLUs die and the loss then sits at chance level (ln 10 = 2.30) for the rest of the run."""
    torch.manual_seed(seed)
    loader = DataLoader(_blobs(n=2048, seed=seed, spread=1.0), batch_size=32, shuffle=True)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for xb, yb in _batches(loader, steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(xb), yb)
        if divide_by:
            loss = loss / divide_by  # as Lightning does (`loss / accumulate_grad_batches`)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def classifier(steps: int = 120, lr: float = 1e-2, seed: int = 0, clip: float = 0.0, n: int = 2048,
               wrong_labels_at: int = -1):
    """Healthy: the same classifier with a sane learning rate (optionally with gradient clipping). With
    `wrong_labels_at`, one batch of wrong labels at that step (a labelling slip in the data): once the
    model has fitted, the loss of that step leaps (~11) and its gradient norm (~900x), then both go back."""
    torch.manual_seed(seed)
    loader = DataLoader(_blobs(n=n, seed=seed), batch_size=32, shuffle=True)
    model = _classifier()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for i, (xb, yb) in enumerate(_batches(loader, steps)):
        if i == wrong_labels_at:
            yb = (yb + 1) % 10
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        losses.append(loss.item())
    return losses


def zero_grad_before_step(steps: int = 20, set_to_none: bool = True):
    """zero_grad() between backward() and step(): every step runs on cleared gradients."""
    torch.manual_seed(0)
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    losses = []
    for _ in range(steps):
        x = torch.randn(16, 8)
        loss = nn.functional.mse_loss(model(x), x[:, :1])
        loss.backward()
        opt.zero_grad(set_to_none=set_to_none)
        opt.step()
        losses.append(loss.item())
    return losses


def closure_nan_gradient(steps: int = 8, bad_step: int = 4):
    """`optimizer.step(closure)`: the closure's backward gives a NaN gradient at `bad_step` (0-based)."""
    torch.manual_seed(0)
    embed = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4))
    opt = torch.optim.SGD(embed.parameters(), lr=0.1)
    losses = []
    for step in range(steps):
        a, b = torch.randn(16, 6), torch.randn(16, 6)
        if step == bad_step:
            b[3] = a[3]

        def closure():
            opt.zero_grad()
            dist = torch.sqrt(((embed(a) - embed(b)) ** 2).sum(-1))
            loss = torch.relu(1.0 - dist).mean()
            loss.backward()
            return loss

        losses.append(opt.step(closure).item())
    return losses


def lbfgs(steps: int = 10):
    """Healthy: LBFGS (several closure evaluations per step)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 8, generator=g)
    y = x[:, :2].sum(1, keepdim=True)
    model = _mlp()
    opt = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=5)
    losses = []
    for _ in range(steps):
        def closure():
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            return loss

        losses.append(opt.step(closure).item())
    return losses


def clipped_lr_spike(steps: int = 60, at: int = 30):
    """Gradient clipping hides an explosion from the post-clip norm: a schedule bug sets the learning
    rate 1000x too high at step `at`; the loss climbs and the raw gradient norm explodes."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    losses = []
    for step in range(steps):
        if step == at:
            for group in opt.param_groups:
                group["lr"] = 10.0
        x = torch.randn(64, 8)
        y = x.sum(1, keepdim=True)
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    return losses


def diverge_to_nan(steps: int = 60, at: int = 25):
    """The learning rate blows up at `at`: gradients explode, and a few steps later the loss is NaN."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = []
    for step in range(steps):
        if step == at:
            for group in opt.param_groups:
                group["lr"] = 50.0
        x = torch.randn(64, 8)
        y = x.sum(1, keepdim=True)
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def gan(steps: int = 60):
    """Healthy: a tiny GAN, two optimizers named by their variables, two models of one class."""
    torch.manual_seed(0)
    netG = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    netD = nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
    optimizerG = torch.optim.Adam(netG.parameters(), lr=1e-3, betas=(0.5, 0.999))
    optimizerD = torch.optim.Adam(netD.parameters(), lr=1e-3, betas=(0.5, 0.999))
    bce = nn.BCEWithLogitsLoss()
    losses = []
    for _ in range(steps):
        real = torch.randn(32, 2) * 0.5 + torch.tensor([2.0, -1.0])
        z = torch.randn(32, 4)
        optimizerD.zero_grad()
        fake = netG(z)
        lossD = bce(netD(real), torch.ones(32, 1)) + bce(netD(fake.detach()), torch.zeros(32, 1))
        lossD.backward()
        optimizerD.step()
        optimizerG.zero_grad()
        lossG = bce(netD(fake), torch.ones(32, 1))
        lossG.backward()
        optimizerG.step()
        losses.append(lossG.item())
    return losses


def autocast_bf16(steps: int = 40):
    """Healthy: CPU autocast to bfloat16 around the forward pass and the loss."""
    torch.manual_seed(0)
    loader = DataLoader(_blobs(n=640, seed=0), batch_size=32, shuffle=True)
    model = _classifier()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for xb, yb in _batches(loader, steps):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def warmup_from_zero(steps: int = 60):
    """Healthy: a linear warmup whose first learning rate is 0 (the first step changes nothing)."""
    torch.manual_seed(0)
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, i / 20))
    losses = []
    for _ in range(steps):
        x = torch.randn(32, 8)
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), x[:, :2].sum(1, keepdim=True))
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


def frozen_layers(steps: int = 40):
    """Healthy: the first layer frozen (requires_grad=False) but still handed to the optimizer."""
    torch.manual_seed(0)
    model = _mlp()
    for p in model[0].parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        x = torch.randn(32, 8)
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), x[:, :2].sum(1, keepdim=True))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def detached_output(steps: int = 10):
    """TL108: the optimizer owns a model the loss never reaches (its output is detached)."""
    torch.manual_seed(0)
    head = nn.Linear(8, 1)
    body = nn.Linear(8, 8)
    opt = torch.optim.SGD(body.parameters(), lr=0.1)
    opt_head = torch.optim.SGD(head.parameters(), lr=0.1)
    losses = []
    for _ in range(steps):
        x = torch.randn(16, 8)
        opt.zero_grad()
        opt_head.zero_grad()
        loss = head(body(x).detach()).pow(2).mean()
        loss.backward()
        opt_head.step()
        opt.step()
        losses.append(loss.item())
    return losses


def gan_not_cleared(steps: int = 8):
    """TL103 in a GAN: the discriminator's optimizer never clears its gradients."""
    torch.manual_seed(0)
    netG = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    netD = nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
    optimizerG = torch.optim.Adam(netG.parameters(), lr=1e-3)
    optimizerD = torch.optim.Adam(netD.parameters(), lr=1e-3)
    bce = nn.BCEWithLogitsLoss()
    for _ in range(steps):
        real = torch.randn(32, 2)
        fake = netG(torch.randn(32, 4))
        lossD = bce(netD(real), torch.ones(32, 1)) + bce(netD(fake.detach()), torch.zeros(32, 1))
        lossD.backward()
        optimizerD.step()
        optimizerG.zero_grad()
        lossG = bce(netD(fake), torch.ones(32, 1))
        lossG.backward()
        optimizerG.step()
    return []


def no_training():
    """A script that never trains (nothing for the runtime checks to see)."""
    print("nothing to train")


def manual_sgd(steps: int = 30):
    """Healthy, without a torch.optim optimizer: the parameters are updated by hand (pytorch/examples'
    word_language_model: `model.zero_grad()`, backward, `p.data.add_(p.grad, alpha=-lr)`)."""
    torch.manual_seed(0)
    loader = DataLoader(_regression_data(), batch_size=100, shuffle=True)
    model = _mlp()
    losses = []
    for xb, yb in _batches(loader, steps):
        model.zero_grad()
        loss = nn.functional.mse_loss(model(xb), yb)
        loss.backward()
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-0.05)
        losses.append(loss.item())
    return losses


def dirty_data(epochs: int = 2, bad_row: int = 437):
    """TL111: one row of the dataset holds a NaN (a missing value); its batch makes the loss NaN."""
    torch.manual_seed(0)
    data = _regression_data(n=640)
    data.tensors[0][bad_row, 3] = float("nan")
    loader = DataLoader(data, batch_size=64, shuffle=False)
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    losses = []
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(xb), yb)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return losses


def unnormalised(epochs: int = 2, missing_row: Optional[int] = None, units: float = 1e4):
    """TL111: tabular data with one feature in raw units (an income, ~1e4) next to standardised ones;
    with `missing_row`, that row's value of it is missing (NaN)."""
    torch.manual_seed(0)
    data = _regression_data(n=640)
    data.tensors[0][:, 5] = 3 * units + units * data.tensors[0][:, 5]
    if missing_row is not None:
        data.tensors[0][missing_row, 5] = float("nan")
    loader = DataLoader(data, batch_size=64, shuffle=True)
    model = _mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(xb), yb)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return losses


def _bn_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))


def bn_cnn(steps: int = 20, batch_size: int = 16):
    """A small CNN with BatchNorm; batch_size=2: TL112 (statistics of two samples)."""
    torch.manual_seed(0)
    model = _bn_cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    losses = []
    for _ in range(steps):
        x = torch.randn(batch_size, 1, 8, 8)
        y = (x.mean((1, 2, 3)) > 0).long()
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def bn_last_batch_of_one():
    """TL112: 65 samples in batches of 16: the last batch holds one sample; BatchNorm1d raises on it."""
    torch.manual_seed(0)
    data = _regression_data(n=65)
    loader = DataLoader(data, batch_size=16)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for xb, yb in loader:
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(xb), yb)
        loss.backward()
        opt.step()
    return []


# ---------------------------------------------------------------- softmax / sigmoid saturation (TL115)
def _separable(n: int = 512, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=g)
    return x, (x[:, :4].sum(1) > 0).float(), x[:, :10].argmax(1)


def sigmoid_probabilities(steps: int = 120, lr: float = 50.0):
    """A binary classifier ending in nn.Sigmoid, trained with BCELoss on the probabilities. With lr=50
    the logits run to thousands: every output is exactly 0 or 1, BCELoss clamps its log at -100 and
    nothing is NaN, but no gradient passes the sigmoid any more (TL115). With lr=1 and more steps it
    converges to confident logits (tens) and stays silent."""
    torch.manual_seed(0)
    x, y, _ = _separable()
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1), nn.Sigmoid())
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for i in range(steps):
        idx = torch.arange(i * 32, i * 32 + 32) % len(x)
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy(model(x[idx]).squeeze(1), y[idx])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def softmax_probabilities(steps: int = 120, lr: float = 5.0):
    """10 classes, `torch.softmax` then the log of the probabilities (guarded by + 1e-12), Adam. With
    lr=5 the logits run apart by 1e5: the softmax rows are exactly one-hot (TL115); lr=1e-2 learns."""
    torch.manual_seed(0)
    x, _, y = _separable()
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for i in range(steps):
        idx = torch.arange(i * 32, i * 32 + 32) % len(x)
        opt.zero_grad()
        p = torch.softmax(model(x[idx]), dim=1)
        loss = nn.functional.nll_loss(torch.log(p + 1e-12), y[idx])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


class _CausalAttention(nn.Module):
    def __init__(self, d: int = 16):
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, 1)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        scores = q @ k.transpose(1, 2) / q.shape[-1] ** 0.5
        n = x.shape[1]
        mask = torch.ones(n, n, dtype=torch.bool).triu(1)
        att = scores.masked_fill(mask, float("-inf")).softmax(dim=-1)  # masked entries exactly 0
        return self.out((att @ v).mean(1))


def masked_attention(steps: int = 80):
    """Healthy: causal self-attention, masked with -inf before `Tensor.softmax` (exact zeros by design,
    from the first step), a regression target."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, 16, generator=g)
    y = x[:, :, :2].sum((1, 2)).unsqueeze(1) / 4
    model = _CausalAttention()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for i in range(steps):
        idx = torch.arange(i * 16, i * 16 + 16) % len(x)
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


# ---------------------------------------------------------------- torchrun (gloo, CPU): 2 ranks
def _ranks_run(ddp: bool, steps: int = 60):
    """Each rank trains the same model (same seed) on its own data; with `ddp` the gradients are
    averaged by DistributedDataParallel, without it nothing synchronises them (TL114). Without DDP,
    rank 1's data also has a feature in raw units (TL111 on rank 1 only)."""
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    net = nn.parallel.DistributedDataParallel(model) if ddp else model
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(100 + rank)
    x = torch.randn(steps * 32, 8, generator=g)
    y = x[:, :2].sum(1, keepdim=True)
    if rank == 1 and not ddp:
        x[:, 5] *= 1e-3  # a feature in other units, a thousand times smaller than the others
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    losses = []
    for xb, yb in loader:
        opt.zero_grad()
        loss = nn.functional.mse_loss(net(xb), yb)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    dist.destroy_process_group()
    return losses


def ranks_diverge():
    return _ranks_run(ddp=False)


def ranks_ddp():
    return _ranks_run(ddp=True)


class _ScriptedClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _classifier()

    def forward(self, x, y):
        return nn.functional.cross_entropy(self.net(x), y)


def scripted_loss(steps: int = 40, seed: int = 0):
    """Healthy: a TorchScript module computing its own cross-entropy (`torch.jit.script` under watch)."""
    torch.manual_seed(seed)
    loader = DataLoader(_blobs(n=512, seed=seed), batch_size=32, shuffle=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.9+: "torch.jit.script is deprecated"
        model = torch.jit.script(_ScriptedClassifier())
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for xb, yb in _batches(loader, steps):
        opt.zero_grad()
        loss = model(xb, yb)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


class SelfClearingSGD(torch.optim.SGD):
    """An optimizer that clears its gradients at the end of step() (in place or to None), as some
    framework optimizers do: the loop needs no zero_grad()."""

    def __init__(self, params, set_to_none: bool, **kw):
        super().__init__(params, **kw)
        self.clear_to_none = set_to_none

    @torch.no_grad()
    def step(self, closure=None):
        out = super().step(closure)
        self.zero_grad(set_to_none=self.clear_to_none)
        return out


def optimizer_clears_in_step(steps: int = 30, set_to_none: bool = False):
    """Healthy: no zero_grad() in the loop because the optimizer's own step() clears the gradients."""
    torch.manual_seed(0)
    loader = DataLoader(_regression_data(), batch_size=100, shuffle=True)
    model = _mlp()
    opt = SelfClearingSGD(model.parameters(), set_to_none, lr=0.05)
    losses = []
    for xb, yb in _batches(loader, steps):
        loss = nn.functional.mse_loss(model(xb), yb)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


# ---------------------------------------------------------------- for the CLI tests
def fail_after_no_zero_grad():
    no_zero_grad(steps=5)
    raise ValueError("boom from the training script")


def exit_3():
    no_zero_grad(steps=5)
    sys.exit(3)


def interrupt():
    no_zero_grad(steps=5)
    raise KeyboardInterrupt


def show_main():
    """Print what a script sees: argv, __name__ of the main module, sys.path[0]."""
    main = sys.modules["__main__"]
    print(json.dumps({"argv": sys.argv, "name": main.__name__, "path0": sys.path[0],
                      "file": getattr(main, "__file__", None)}))


if __name__ == "__main__":
    name = sys.argv[1]
    result = globals()[name]()
    if "--trace" in sys.argv:
        with open(sys.argv[sys.argv.index("--trace") + 1], "w") as fh:
            json.dump(result, fh)
