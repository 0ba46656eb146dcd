"""A distributed AMP classifier training script with one instance of each rule TL006-TL017.

`trainlint examples/more_training_bugs.py` reports them; each comment names the rule and what goes wrong.
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler


class Classifier(nn.Module):
    def __init__(self, classes=10, p=0.3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2, 3),  # TL010: a stride larger than the kernel skips inputs
        )
        self.fc = nn.Linear(32 * 10 * 10, classes)
        self.p = p

    def forward(self, x):
        x = self.features(x).flatten(1)
        x = F.dropout(x, self.p)  # TL012: functional dropout stays on in eval mode
        return self.fc(x)


def normalise(x):
    return (x - x.mean()) / x.std()  # TL009: a constant batch gives 0/0 = NaN


def evaluate(model, loader):
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
    return correct / len(loader.dataset)


def main(epochs=10):
    torch.autograd.set_detect_anomaly(True)  # TL016: every step 2-3x slower
    data = TensorDataset(torch.randn(1000, 3, 32, 32), torch.randint(0, 10, (1000,)))
    sampler = DistributedSampler(data)  # TL014: never told the epoch, every epoch has the same order
    train_loader = DataLoader(data, batch_size=50, sampler=sampler, drop_last=True)
    val_loader = DataLoader(data, batch_size=50)

    model = Classifier()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5)
    scaler = torch.cuda.amp.GradScaler()
    criterion = nn.CrossEntropyLoss()
    running_loss = 0.0

    model.train()
    for epoch in range(epochs):
        for x, y in train_loader:
            scheduler.step()  # TL015: the scheduler steps before the optimizer
            optimizer.zero_grad()
            with torch.autocast("cuda"):
                logits = model.forward(normalise(x))  # TL017: forward() skips the module's hooks
                probs = F.softmax(logits, dim=1)
                loss = criterion(probs, y)  # TL007: CrossEntropyLoss applies its own softmax
                aux = -(F.one_hot(y, 10) * torch.log(probs)).sum(1).mean()  # TL008: log(0) = -inf
                loss = loss + 0.1 * aux
            scaler.scale(loss).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # TL006: clips scaled gradients
            scaler.step(optimizer)
            scaler.update()
            running_loss += loss  # TL013: keeps every iteration's graph alive
        print(epoch, evaluate(model, val_loader))  # TL011: training goes on in eval mode


if __name__ == "__main__":
    np.seterr(divide="ignore", invalid="ignore")
    main()
