"""A small segmentation training script with the bugs trainlint exists to catch.

Run `trainlint examples/` to see them. Nothing here is imported or executed by the linter.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset


class DiceLoss(nn.Module):
    def __init__(self, smooth=1.0):
        super().__init__()
        self.smooth = smooth

    def forward(self, logits, target):
        prob = torch.sigmoid(logits)
        inter = (prob * target).sum()
        denom = prob.sum() + target.sum()
        # TL002: the smoothing term in the numerator makes training collapse (MONAI report)
        return 1 - (2 * inter + self.smooth) / (denom + self.smooth)


def make_model():
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 1))


def main(epochs=5, batch_size=16):
    images = torch.randn(1010, 1, 32, 32)
    masks = (torch.rand(1010, 1, 32, 32) > 0.5).float()
    # TL004: the loss below is averaged twice (TL003), and 1010 % 16 != 0 leaves a short last batch
    train_loader = DataLoader(TensorDataset(images, masks), batch_size=batch_size, shuffle=True)

    model = make_model().half()
    # TL005: fp16 parameters, and Adam's default eps=1e-8 rounds to 0 in fp16
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    dice = DiceLoss()
    bce = nn.BCEWithLogitsLoss()

    for epoch in range(epochs):
        for x, y in train_loader:
            logits = model(x.half())
            # TL003: BCEWithLogitsLoss already averages over the batch
            loss = bce(logits, y.half()) / x.size(0) + dice(logits, y)
            loss.backward()
            # TL001: the gradients are never cleared
            optimizer.step()


if __name__ == "__main__":
    main()
