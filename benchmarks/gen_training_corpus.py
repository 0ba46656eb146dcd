"""Generate a corpus of realistic, varied PyTorch training scripts (for benchmarks/bench_static.py).

Every script has a training loop with backward() and step(), so every trainlint rule's prefilter lets
it through and every file is parsed: this corpus measures the linter's per-file cost, not its skipping.
Deterministic for a given seed. Some scripts carry the bugs trainlint looks for (a missing zero_grad,
smoothing in a Dice numerator, a tiny Adam eps, a loss averaged twice, a train loader without
drop_last), most do not.

    python benchmarks/gen_training_corpus.py OUT_DIR [--count 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import random
from typing import List

# -- pieces ---------------------------------------------------------------------------------------

IMPORT_LINES = [
    "import argparse",
    "import math",
    "import os",
    "import random",
    "import time",
    "import numpy as np",
    "import torch",
    "import torch.nn as nn",
    "import torch.nn.functional as F",
]


def _imports(r: random.Random, amp: bool) -> List[str]:
    lines = list(IMPORT_LINES)
    if r.random() < 0.3:
        lines.append("import logging")
    if r.random() < 0.3:
        lines.append("from dataclasses import dataclass")
    data = ["DataLoader", "Dataset"]
    if r.random() < 0.5:
        data.append("TensorDataset")
    if r.random() < 0.3:
        data.append("random_split")
    lines.append("from torch.utils.data import " + ", ".join(data))
    if amp:
        lines.append("from torch.cuda.amp import GradScaler, autocast")
    if r.random() < 0.5:
        lines.append("from torch.optim.lr_scheduler import CosineAnnealingLR, StepLR")
    return lines


def _seed_fn(r: random.Random) -> List[str]:
    return [
        "def set_seed(seed: int = %d) -> None:" % r.randint(0, 9999),
        "    random.seed(seed)",
        "    np.random.seed(seed)",
        "    torch.manual_seed(seed)",
        "    if torch.cuda.is_available():",
        "        torch.cuda.manual_seed_all(seed)",
    ]


def _meter() -> List[str]:
    return [
        "class AverageMeter:",
        '    """Keeps a running average of a scalar."""',
        "",
        "    def __init__(self, name: str = \"\") -> None:",
        "        self.name = name",
        "        self.reset()",
        "",
        "    def reset(self) -> None:",
        "        self.val = 0.0",
        "        self.sum = 0.0",
        "        self.count = 0",
        "        self.avg = 0.0",
        "",
        "    def update(self, val: float, n: int = 1) -> None:",
        "        self.val = val",
        "        self.sum += val * n",
        "        self.count += n",
        "        self.avg = self.sum / max(1, self.count)",
        "",
        "    def __repr__(self) -> str:",
        "        return f\"{self.name}: {self.avg:.4f}\"",
    ]


def _dataset(r: random.Random, kind: str, n_in: int, n_out: int) -> List[str]:
    size = r.choice([512, 1000, 2048, 4096, 5000])
    if kind == "image":
        shape = "1, 28, 28" if r.random() < 0.5 else "3, 32, 32"
        x = f"torch.randn({size}, {shape})"
    else:
        x = f"torch.randn({size}, {n_in})"
    if n_out == 1:
        y = f"torch.randn({size}, 1)"
    else:
        y = f"torch.randint(0, {n_out}, ({size},))"
    return [
        "class SyntheticDataset(Dataset):",
        '    """Random inputs and targets; stands in for a real data set."""',
        "",
        "    def __init__(self, train: bool = True, transform=None) -> None:",
        "        g = torch.Generator().manual_seed(0 if train else 1)",
        f"        self.x = {x}",
        f"        self.y = {y}",
        "        self.transform = transform",
        "",
        "    def __len__(self) -> int:",
        "        return len(self.x)",
        "",
        "    def __getitem__(self, idx):",
        "        x, y = self.x[idx], self.y[idx]",
        "        if self.transform is not None:",
        "            x = self.transform(x)",
        "        return x, y",
    ]


def _mlp(r: random.Random, n_in: int, n_out: int) -> List[str]:
    hidden = r.choice([64, 128, 256, 512])
    depth = r.randint(2, 4)
    drop = r.choice([0.0, 0.1, 0.2, 0.5])
    lines = [
        "class Net(nn.Module):",
        f"    def __init__(self, in_features: int = {n_in}, hidden: int = {hidden}, out_features: int = {n_out}):",
        "        super().__init__()",
        "        layers = []",
        "        width = in_features",
        f"        for _ in range({depth}):",
        "            layers.append(nn.Linear(width, hidden))",
        "            layers.append(nn.ReLU())",
    ]
    if drop:
        lines.append(f"            layers.append(nn.Dropout({drop}))")
    lines += [
        "            width = hidden",
        "        layers.append(nn.Linear(width, out_features))",
        "        self.net = nn.Sequential(*layers)",
        "",
        "    def forward(self, x):",
        "        x = x.flatten(1)",
        "        return self.net(x)",
    ]
    return lines


def _cnn(r: random.Random, n_out: int) -> List[str]:
    c = r.choice([16, 32, 64])
    return [
        "class ConvBlock(nn.Module):",
        "    def __init__(self, cin: int, cout: int, stride: int = 1):",
        "        super().__init__()",
        "        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)",
        "        self.bn1 = nn.BatchNorm2d(cout)",
        "        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)",
        "        self.bn2 = nn.BatchNorm2d(cout)",
        "        self.short = nn.Identity() if stride == 1 and cin == cout else nn.Conv2d(cin, cout, 1, stride=stride)",
        "",
        "    def forward(self, x):",
        "        out = F.relu(self.bn1(self.conv1(x)))",
        "        out = self.bn2(self.conv2(out))",
        "        return F.relu(out + self.short(x))",
        "",
        "",
        "class Net(nn.Module):",
        f"    def __init__(self, in_channels: int = 3, num_classes: int = {n_out}):",
        "        super().__init__()",
        f"        self.stem = nn.Conv2d(in_channels, {c}, 3, padding=1)",
        f"        self.layer1 = ConvBlock({c}, {c})",
        f"        self.layer2 = ConvBlock({c}, {c * 2}, stride=2)",
        f"        self.layer3 = ConvBlock({c * 2}, {c * 4}, stride=2)",
        "        self.pool = nn.AdaptiveAvgPool2d(1)",
        f"        self.fc = nn.Linear({c * 4}, num_classes)",
        "",
        "    def forward(self, x):",
        "        if x.shape[1] != self.stem.in_channels:",
        "            x = x.expand(-1, self.stem.in_channels, -1, -1)",
        "        x = F.relu(self.stem(x))",
        "        x = self.layer3(self.layer2(self.layer1(x)))",
        "        return self.fc(self.pool(x).flatten(1))",
    ]


def _transformer(r: random.Random, n_in: int, n_out: int) -> List[str]:
    d = r.choice([64, 128, 256])
    heads = r.choice([2, 4, 8])
    return [
        "class Net(nn.Module):",
        f"    def __init__(self, in_features: int = {n_in}, d_model: int = {d}, nhead: int = {heads}, num_classes: int = {n_out}):",
        "        super().__init__()",
        "        self.proj = nn.Linear(1, d_model)",
        "        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward=4 * d_model, batch_first=True)",
        f"        self.encoder = nn.TransformerEncoder(layer, num_layers={r.randint(1, 4)})",
        "        self.norm = nn.LayerNorm(d_model)",
        "        self.head = nn.Linear(d_model, num_classes)",
        "",
        "    def forward(self, x):",
        "        x = x.flatten(1).unsqueeze(-1)",
        "        h = self.encoder(self.proj(x))",
        "        return self.head(self.norm(h.mean(dim=1)))",
    ]


def _dice(r: random.Random, buggy: bool) -> List[str]:
    num = "2 * inter + self.smooth" if buggy else "2 * inter"
    return [
        "class DiceLoss(nn.Module):",
        f"    def __init__(self, smooth: float = {r.choice(['1.0', '1e-5', '1e-6'])}):",
        "        super().__init__()",
        "        self.smooth = smooth",
        "",
        "    def forward(self, logits, target):",
        "        prob = torch.sigmoid(logits)",
        "        inter = (prob * target).sum()",
        "        denom = prob.sum() + target.sum()",
        f"        return 1 - ({num}) / (denom + self.smooth)",
    ]


def _metrics(r: random.Random) -> List[str]:
    lines = [
        "def accuracy(output, target) -> float:",
        "    with torch.no_grad():",
        "        if output.shape[-1] == 1:",
        "            pred = (output > 0).long().squeeze(-1)",
        "            target = (target > 0).long().squeeze(-1)",
        "        else:",
        "            pred = output.argmax(dim=1)",
        "        correct = (pred == target).sum().item()",
        "        return correct / target.numel()",
    ]
    if r.random() < 0.5:
        # Half of these smooth the numerator too (a metric, so harmless; TL002 still flags it).
        ratio = "(tp + eps) / (union + eps)" if r.random() < 0.5 else "tp / (union + eps)"
        lines += [
            "",
            "",
            "def iou(pred, target, eps: float = 1e-7) -> float:",
            "    tp = (pred * target).sum()",
            "    union = pred.sum() + target.sum() - tp",
            f"    return float({ratio})",
        ]
    return lines


def _warmup(r: random.Random) -> List[str]:
    return [
        "def warmup_lr(step: int, base_lr: float, warmup: int = %d) -> float:" % r.choice([100, 500, 1000]),
        "    if step < warmup:",
        "        return base_lr * (step + 1) / warmup",
        "    progress = (step - warmup) / max(1, 10000 - warmup)",
        "    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))",
    ]


def _count_params() -> List[str]:
    return [
        "def count_parameters(model: nn.Module) -> int:",
        "    return sum(p.numel() for p in model.parameters() if p.requires_grad)",
    ]


def _checkpoint() -> List[str]:
    return [
        "def save_checkpoint(model, optimizer, epoch: int, path: str) -> None:",
        "    os.makedirs(os.path.dirname(path) or \".\", exist_ok=True)",
        "    torch.save({\"model\": model.state_dict(), \"optimizer\": optimizer.state_dict(), \"epoch\": epoch}, path)",
        "",
        "",
        "def load_checkpoint(model, optimizer, path: str) -> int:",
        "    if not os.path.exists(path):",
        "        return 0",
        "    state = torch.load(path, map_location=\"cpu\")",
        "    model.load_state_dict(state[\"model\"])",
        "    optimizer.load_state_dict(state[\"optimizer\"])",
        "    return state[\"epoch\"] + 1",
    ]


def _optimizer(r: random.Random, amp: bool, bug_eps: bool) -> str:
    name = r.choice(["Adam", "AdamW", "SGD", "RMSprop", "Adam", "AdamW", "NAdam", "Adagrad"])
    if name == "SGD":
        return f"torch.optim.SGD(model.parameters(), lr=args.lr, momentum={r.choice([0.9, 0.95])}, weight_decay=args.weight_decay)"
    eps = "1e-10" if bug_eps else r.choice(["1e-8", "1e-6", "1e-4", None])
    extra = f", eps={eps}" if eps else ""
    return f"torch.optim.{name}(model.parameters(), lr=args.lr, weight_decay=args.weight_decay{extra})"


def _criterion(r: random.Random, n_out: int, dice: bool) -> str:
    if dice:
        return "DiceLoss()"
    if n_out == 1:
        return r.choice(["nn.MSELoss()", "nn.SmoothL1Loss()", "nn.BCEWithLogitsLoss()", "nn.L1Loss()"])
    return r.choice(["nn.CrossEntropyLoss()", "nn.CrossEntropyLoss(label_smoothing=0.1)", "nn.NLLLoss()"])


def _loss_expr(crit: str, double_mean: bool) -> str:
    if crit == "nn.NLLLoss()":
        base = "criterion(F.log_softmax(output, dim=1), target)"
    else:
        base = "criterion(output, target)"
    if double_mean:
        return f"{base} / inputs.size(0)"
    return base


def _train_epoch(r: random.Random, style: str, amp: bool, clip: bool, accum: bool, double_mean: bool,
                 crit: str, meter: bool) -> List[str]:
    loss = _loss_expr(crit, double_mean)
    L = [
        "def train_one_epoch(model, loader, criterion, optimizer, device, epoch: int, log_every: int = 50%s):"
        % (", scaler=None" if amp else ""),
        "    model.train()",
    ]
    if meter:
        L.append("    losses = AverageMeter(\"loss\")")
    else:
        L.append("    running = 0.0")
    if accum:
        L.append(f"    accum_steps = {r.choice([2, 4, 8])}")
        L.append("    optimizer.zero_grad()")
    L.append("    for i, (inputs, target) in enumerate(loader):")
    L.append("        inputs, target = inputs.to(device), target.to(device)")
    body: List[str] = []
    clear = "optimizer.zero_grad(set_to_none=True)" if r.random() < 0.5 else "optimizer.zero_grad()"
    if style == "missing" and not accum:
        clear = ""
    if amp:
        if style != "end" and clear and not accum:
            body.append(clear)
        body += [
            "with autocast():",
            "    output = model(inputs)",
            f"    loss = {loss}",
        ]
        if accum:
            body.append("loss = loss / accum_steps")
        body.append("scaler.scale(loss).backward()")
        step_block = []
        if clip:
            step_block += ["scaler.unscale_(optimizer)", "torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)"]
        step_block += ["scaler.step(optimizer)", "scaler.update()"]
    else:
        if style != "end" and clear and not accum:
            body.append(clear)
        body += ["output = model(inputs)", f"loss = {loss}"]
        if accum:
            body.append("loss = loss / accum_steps")
        body.append("loss.backward()")
        step_block = []
        if clip:
            step_block.append("torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)")
        step_block.append("optimizer.step()")
    if accum:
        body.append("if (i + 1) % accum_steps == 0:")
        body += ["    " + s for s in step_block]
        body.append("    optimizer.zero_grad()")
    else:
        body += step_block
        if style == "end" and clear:
            body.append(clear)
    if meter:
        body.append("losses.update(loss.item(), inputs.size(0))")
    else:
        body.append("running += loss.item()")
    body += [
        "if i % log_every == 0:",
        "    print(f\"epoch {epoch} step {i}/{len(loader)} loss {loss.item():.4f}\")",
    ]
    L += ["        " + s for s in body]
    L.append("    return losses.avg" if meter else "    return running / max(1, len(loader))")
    return L


def _evaluate(r: random.Random, crit: str) -> List[str]:
    loss = _loss_expr(crit, False)
    return [
        "@torch.no_grad()",
        "def evaluate(model, loader, criterion, device):",
        "    model.eval()",
        "    total, acc, n = 0.0, 0.0, 0",
        "    for inputs, target in loader:",
        "        inputs, target = inputs.to(device), target.to(device)",
        "        output = model(inputs)",
        f"        total += {loss}.item() * inputs.size(0)",
        "        acc += accuracy(output, target) * inputs.size(0)",
        "        n += inputs.size(0)",
        "    return total / max(1, n), acc / max(1, n)",
    ]


def _args(r: random.Random) -> List[str]:
    return [
        "def parse_args(argv=None):",
        "    p = argparse.ArgumentParser(description=__doc__)",
        f"    p.add_argument(\"--epochs\", type=int, default={r.choice([1, 3, 5, 10, 20])})",
        f"    p.add_argument(\"--batch-size\", type=int, default={r.choice([16, 32, 64, 128, 256])})",
        f"    p.add_argument(\"--lr\", type=float, default={r.choice(['1e-3', '3e-4', '1e-2', '0.1'])})",
        f"    p.add_argument(\"--weight-decay\", type=float, default={r.choice(['0.0', '1e-4', '5e-4', '0.01'])})",
        "    p.add_argument(\"--workers\", type=int, default=0)",
        "    p.add_argument(\"--checkpoint\", default=\"checkpoints/last.pt\")",
        "    p.add_argument(\"--seed\", type=int, default=0)",
        "    return p.parse_args(argv)",
    ]


def _main(r: random.Random, amp: bool, sched: bool, drop_last_bug: bool, crit: str, opt: str,
          has_ckpt: bool, has_seed: bool, model_kind: str) -> List[str]:
    dl = "" if drop_last_bug else ", drop_last=True"
    L = [
        "def main(argv=None):",
        "    args = parse_args(argv)",
    ]
    if has_seed:
        L.append("    set_seed(args.seed)")
    L += [
        "    device = torch.device(\"cuda\" if torch.cuda.is_available() else \"cpu\")",
        "    train_set = SyntheticDataset(train=True)",
        "    val_set = SyntheticDataset(train=False)",
        f"    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, num_workers=args.workers{dl})",
        "    val_loader = DataLoader(val_set, batch_size=args.batch_size, shuffle=False, num_workers=args.workers)",
        "    model = Net().to(device)",
        f"    criterion = {crit}",
        f"    optimizer = {opt}",
    ]
    if sched:
        L.append("    scheduler = " + r.choice([
            "torch.optim.lr_scheduler.StepLR(optimizer, step_size=10, gamma=0.1)",
            "torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)",
            "torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.95)",
        ]))
    if amp:
        L.append("    scaler = GradScaler(enabled=torch.cuda.is_available())")
    start = "load_checkpoint(model, optimizer, args.checkpoint)" if has_ckpt else "0"
    L += [
        f"    start_epoch = {start}",
        "    best = math.inf",
        "    for epoch in range(start_epoch, args.epochs):",
        "        t0 = time.time()",
        "        train_loss = train_one_epoch(model, train_loader, criterion, optimizer, device, epoch%s)"
        % (", scaler=scaler" if amp else ""),
        "        val_loss, val_acc = evaluate(model, val_loader, criterion, device)",
    ]
    if sched:
        L.append("        scheduler.step()")
    L += [
        "        print(f\"epoch {epoch}: train {train_loss:.4f} val {val_loss:.4f} acc {val_acc:.3f} ({time.time() - t0:.1f}s)\")",
        "        if val_loss < best:",
        "            best = val_loss",
    ]
    if has_ckpt:
        L.append("            save_checkpoint(model, optimizer, epoch, args.checkpoint)")
    else:
        L.append("            torch.save(model.state_dict(), \"best.pt\")")
    L.append("    return best")
    return L


def _inline_loop(r: random.Random, crit: str) -> List[str]:
    """A second, simpler training loop written inline (fine-tuning a head), as many scripts have."""
    return [
        "def finetune_head(model, loader, device, steps: int = %d):" % r.choice([50, 100, 200]),
        "    head_opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)",
        f"    criterion = {crit}",
        "    it = iter(loader)",
        "    for step in range(steps):",
        "        try:",
        "            inputs, target = next(it)",
        "        except StopIteration:",
        "            it = iter(loader)",
        "            inputs, target = next(it)",
        "        inputs, target = inputs.to(device), target.to(device)",
        "        head_opt.zero_grad()",
        f"        loss = {_loss_expr(crit, False)}",
        "        loss.backward()",
        "        head_opt.step()",
    ]


def make_script(r: random.Random, idx: int) -> str:
    model_kind = r.choice(["mlp", "mlp", "cnn", "transformer"])
    n_out = r.choice([1, 10, 10, 100]) if model_kind != "cnn" else r.choice([10, 100])
    n_in = r.choice([32, 64, 784])
    amp = r.random() < 0.3
    dice = model_kind == "mlp" and n_out == 1 and r.random() < 0.4
    dice_bug = dice and r.random() < 0.3
    style = r.choices(["start", "end", "missing"], weights=[70, 20, 10])[0]
    clip = r.random() < 0.4
    accum = r.random() < 0.2
    double_mean = r.random() < 0.1
    drop_last_bug = r.random() < 0.3
    eps_bug = amp and r.random() < 0.3
    sched = r.random() < 0.6
    meter = r.random() < 0.5
    has_ckpt = r.random() < 0.5
    has_seed = r.random() < 0.7
    crit = _criterion(r, n_out, dice)
    opt = _optimizer(r, amp, eps_bug)

    blocks: List[List[str]] = []
    doc = r.choice([
        "Train a {m} on synthetic data.",
        "Baseline {m} training script (experiment {i}).",
        "Reproduce the {m} results from the paper, run {i}.",
        "Quick {m} sweep; see README for the hyper-parameters.",
    ]).format(m=model_kind.upper(), i=idx)
    head = ['"""%s"""' % doc, ""] + _imports(r, amp)
    blocks.append(head)
    if has_seed:
        blocks.append(_seed_fn(r))
    if meter:
        blocks.append(_meter())
    kind = "image" if model_kind == "cnn" else "vector"
    blocks.append(_dataset(r, kind, n_in, n_out))
    if model_kind == "mlp":
        blocks.append(_mlp(r, n_in, n_out))
    elif model_kind == "cnn":
        blocks.append(_cnn(r, n_out))
    else:
        blocks.append(_transformer(r, n_in, n_out))
    if dice:
        blocks.append(_dice(r, dice_bug))
    blocks.append(_metrics(r))
    if r.random() < 0.4:
        blocks.append(_warmup(r))
    if r.random() < 0.5:
        blocks.append(_count_params())
    if has_ckpt:
        blocks.append(_checkpoint())
    blocks.append(_train_epoch(r, style, amp, clip, accum, double_mean, crit, meter))
    blocks.append(_evaluate(r, crit))
    if r.random() < 0.3:
        blocks.append(_inline_loop(r, crit))
    blocks.append(_args(r))
    blocks.append(_main(r, amp, sched, drop_last_bug, crit, opt, has_ckpt, has_seed, model_kind))
    blocks.append(["if __name__ == \"__main__\":", "    main()"])
    out = []
    for i, b in enumerate(blocks):
        if i:
            out += ["", ""]
        out += b
    return "\n".join(out) + "\n"


def generate(out_dir: str, count: int = 200, seed: int = 0) -> List[str]:
    r = random.Random(seed)
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for i in range(count):
        text = make_script(r, i)
        compile(text, f"train_{i:03d}.py", "exec")  # every script must be valid Python
        sub = os.path.join(out_dir, f"project_{i // 20:02d}")
        os.makedirs(sub, exist_ok=True)
        path = os.path.join(sub, f"train_{i:03d}.py")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        paths.append(path)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    paths = generate(a.out_dir, a.count, a.seed)
    lines = sum(open(p, encoding="utf-8").read().count("\n") for p in paths)
    print(f"wrote {len(paths)} scripts, {lines} lines, to {a.out_dir}")


if __name__ == "__main__":
    main()
