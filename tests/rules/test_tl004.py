"""TL004 train-loader-drop-last."""

import pytest
from helpers import case_tests, assert_fix_roundtrip

C = ["TL004"]

HEAD = """
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
"""

BAD = {
    "mean_divided_by_batch_length": HEAD + """
crit = nn.MSELoss()

def train(ds, model, optimizer):
    loader = DataLoader(ds, batch_size=64, shuffle=True)  # expect: TL004
    for x, y in loader:
        optimizer.zero_grad()
        loss = crit(model(x), y) / len(x)
        loss.backward()
        optimizer.step()
""",
    "mean_divided_by_batch_shape": HEAD + """
def train(args, ds, model, optimizer):
    train_loader = DataLoader(ds, batch_size=args.batch_size, num_workers=4)  # expect: TL004
    for epoch in range(args.epochs):
        for x, y in train_loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y) / x.shape[0]
            loss.backward()
            optimizer.step()
""",
    "double_reduction": HEAD + """
criterion = nn.CrossEntropyLoss()

def fit(ds, model, opt):
    dl = DataLoader(ds, batch_size=100, shuffle=True)  # expect: TL004
    for images, labels in dl:
        opt.zero_grad()
        loss = criterion(model(images), labels) / images.size(0)
        loss.backward()
        opt.step()
""",
    "explicit_drop_last_false": HEAD + """
def fit(ds, model, opt):
    loader = DataLoader(ds, batch_size=32, shuffle=True, drop_last=False)  # expect: TL004
    for x, y in loader:
        opt.zero_grad()
        (((model(x) - y) ** 2).mean() / x.shape[0]).backward()
        opt.step()
""",
    "self_attribute_loader": HEAD + """
class Trainer:
    def __init__(self, ds):
        self.train_loader = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True)  # expect: TL004
        self.crit = nn.L1Loss()

    def epoch(self):
        for x, y in self.train_loader:
            self.optimizer.zero_grad()
            loss = self.crit(self.model(x), y) / x.size(0)
            loss.backward()
            self.optimizer.step()
""",
    "dataset_not_divisible": HEAD + """
from torch.utils.data import TensorDataset

def main(model, opt):
    ds = TensorDataset(torch.randn(1010, 8), torch.randn(1010, 1))
    loader = DataLoader(ds, batch_size=100, shuffle=True)  # expect: TL004
    for x, y in loader:
        opt.zero_grad()
        loss = F.mse_loss(model(x), y) / x.size(0)
        loss.backward()
        opt.step()
""",
    "loss_helper_averages_twice": HEAD + """
def loss_function(recon_x, x, mu, logvar):
    bce = F.binary_cross_entropy(recon_x, x.view(-1, 784))
    kld = -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())
    return (bce + kld) / x.size(0)

def train(model, optimizer, mnist):
    train_loader = DataLoader(mnist, batch_size=128, shuffle=True)  # expect: TL004
    for data, _ in train_loader:
        optimizer.zero_grad()
        recon, mu, logvar = model(data)
        loss = loss_function(recon, data, mu, logvar)
        loss.backward()
        optimizer.step()
""",
    "scaler_backward_of_a_twice_averaged_loss": HEAD + """
sum_loss = nn.BCELoss()

def train(ds, model, optimizer, scaler):
    loader = DataLoader(ds, batch_size=8, shuffle=True, pin_memory=True)  # expect: TL004
    for x, y in loader:
        optimizer.zero_grad()
        with torch.autocast("cuda"):
            loss = sum_loss(model(x), y) / x.size(0)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
""",
}

GOOD = {
    # A module-level loader iterated (without backward) inside a function: a demo of batching, no training.
    "module_level_loader_printed_in_a_function": HEAD + """
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(1, 10), nn.BatchNorm1d(10), nn.ReLU(), nn.Linear(10, 1))

loader = DataLoader(TensorDataset(torch.randn(11, 1), torch.randn(11, 1)), batch_size=5, shuffle=True)

def show_batch():
    for epoch in range(3):
        for step, (batch_x, batch_y) in enumerate(loader):
            print(epoch, step, batch_x.numpy())
""",
    # A sum (or a sum over a fixed batch size) weighs every sample alike: the short batch is smaller, not off-scale.
    "sum_reduction_loss_weighs_samples_alike": HEAD + """
crit = nn.MSELoss(reduction="sum")

def train(ds, model, optimizer):
    loader = DataLoader(ds, batch_size=64, shuffle=True)
    for x, y in loader:
        optimizer.zero_grad()
        loss = crit(model(x), y)
        loss.backward()
        optimizer.step()
""",
    # A sum (or a sum over a fixed batch size) weighs every sample alike: the short batch is smaller, not off-scale.
    "divided_by_configured_batch_size_weighs_samples_alike": HEAD + """
def train(args, ds, model, optimizer):
    train_loader = DataLoader(ds, batch_size=args.batch_size, num_workers=4)
    for epoch in range(args.epochs):
        for x, y in train_loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y, reduction="sum") / args.batch_size
            loss.backward()
            optimizer.step()
""",
    # A sum (or a sum over a fixed batch size) weighs every sample alike: the short batch is smaller, not off-scale.
    "explicit_drop_last_false_weighs_samples_alike": HEAD + """
def fit(ds, model, opt):
    loader = DataLoader(ds, batch_size=32, shuffle=True, drop_last=False)
    for x, y in loader:
        opt.zero_grad()
        ((model(x) - y) ** 2).sum().backward()
        opt.step()
""",
    # A sum (or a sum over a fixed batch size) weighs every sample alike: the short batch is smaller, not off-scale.
    "self_attribute_loader_weighs_samples_alike": HEAD + """
class Trainer:
    def __init__(self, ds):
        self.train_loader = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True)
        self.crit = nn.L1Loss(reduction="sum")

    def epoch(self):
        for x, y in self.train_loader:
            self.optimizer.zero_grad()
            loss = self.crit(self.model(x), y)
            loss.backward()
            self.optimizer.step()
""",
    # A sum (or a sum over a fixed batch size) weighs every sample alike: the short batch is smaller, not off-scale.
    "dataset_not_divisible_weighs_samples_alike": HEAD + """
from torch.utils.data import TensorDataset

def main(model, opt):
    ds = TensorDataset(torch.randn(1010, 8), torch.randn(1010, 1))
    loader = DataLoader(ds, batch_size=100, shuffle=True)
    for x, y in loader:
        opt.zero_grad()
        loss = F.mse_loss(model(x), y, reduction="sum")
        loss.backward()
        opt.step()
""",
    # A sum (or a sum over a fixed batch size) weighs every sample alike: the short batch is smaller, not off-scale.
    "vae_loss_helper_sums_weighs_samples_alike": HEAD + """
def loss_function(recon_x, x, mu, logvar):
    bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld

def train(model, optimizer, mnist):
    train_loader = DataLoader(mnist, batch_size=128, shuffle=True)
    for data, _ in train_loader:
        optimizer.zero_grad()
        recon, mu, logvar = model(data)
        loss = loss_function(recon, data, mu, logvar)
        loss.backward()
        optimizer.step()
""",
    # A sum (or a sum over a fixed batch size) weighs every sample alike: the short batch is smaller, not off-scale.
    "scaler_backward_weighs_samples_alike": HEAD + """
sum_loss = nn.BCELoss(reduction="sum")

def train(ds, model, optimizer, scaler):
    loader = DataLoader(ds, batch_size=8, shuffle=True, pin_memory=True)
    for x, y in loader:
        optimizer.zero_grad()
        with torch.autocast("cuda"):
            loss = sum_loss(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
""",
    # A batch mean divided by a constant only rescales every batch alike (the learning rate), no spike.
    "mean_divided_by_configured_batch_size": HEAD + """
def train(args, ds, model, optimizer):
    train_loader = DataLoader(ds, batch_size=args.batch_size, num_workers=4)
    for x, y in train_loader:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y) / args.batch_size
        loss.backward()
        optimizer.step()
""",
    "drop_last_true": BAD["mean_divided_by_batch_length"].replace("shuffle=True)", "shuffle=True, drop_last=True)"),
    "mean_reduced_loss": HEAD + """
def train(ds, model, optimizer):
    loader = DataLoader(ds, batch_size=64, shuffle=True)
    for x, y in loader:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
""",
    "sum_divided_by_actual_length": HEAD + """
crit = nn.MSELoss(reduction="sum")

def train(ds, model, optimizer):
    loader = DataLoader(ds, batch_size=64, shuffle=True)
    for x, y in loader:
        optimizer.zero_grad()
        loss = crit(model(x), y) / x.size(0)
        loss.backward()
        optimizer.step()
""",
    "validation_loader": HEAD + """
crit = nn.MSELoss(reduction="sum")

def evaluate(ds, model):
    val_loader = DataLoader(ds, batch_size=64)
    total = 0.0
    with torch.no_grad():
        for x, y in val_loader:
            total += crit(model(x), y).item()
    return total
""",
    "test_loader_named_unused": HEAD + """
crit = nn.MSELoss(reduction="sum")
test_loader = DataLoader(test_ds, batch_size=64, shuffle=True)

for x, y in other:
    optimizer.zero_grad()
    crit(model(x), y).backward()
    optimizer.step()
""",
    "divisible_literal_dataset": HEAD + """
from torch.utils.data import TensorDataset

def main(model, opt):
    ds = TensorDataset(torch.randn(1000, 8), torch.randn(1000, 1))
    loader = DataLoader(ds, batch_size=100, shuffle=True)
    for x, y in loader:
        opt.zero_grad()
        F.mse_loss(model(x), y, reduction="sum").backward()
        opt.step()
""",
    "kwargs_may_carry_drop_last": HEAD + """
crit = nn.MSELoss(reduction="sum")

def train(ds, model, optimizer, **loader_kwargs):
    loader = DataLoader(ds, **loader_kwargs)
    for x, y in loader:
        optimizer.zero_grad()
        crit(model(x), y).backward()
        optimizer.step()
""",
    "no_training_loop": HEAD + """
loader = DataLoader(ds, batch_size=4, shuffle=True)
for x in loader:
    print(x.shape)
""",
}


test_bad, test_good = case_tests(C, BAD, GOOD)


def test_message_says_why():
    from helpers import lint

    (d,) = lint(BAD["double_reduction"], C)
    assert "twice" in d.message and "larger" in d.message
    assert "drop_last=True" in d.fix.message


@pytest.mark.parametrize("name", BAD)
def test_every_fix_round_trips(name):
    fixed = assert_fix_roundtrip(BAD[name], C)
    assert "drop_last=True" in fixed and "drop_last=False" not in fixed
