"""The Keras SSD field report, in PyTorch: a loss averaged twice spikes on the short last batch.

1010 samples in batches of 100 leave a last batch of 10 every epoch. The loss is already a batch mean
(MSELoss) and is divided by the batch size again, so that batch's loss is ~10x larger: a spike once per
epoch. `trainlint examples/` finds it statically (TL003, TL004); run it to see the runtime check confirm it:

    trainlint run --report run.html examples/short_batch_spike.py
"""

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset


def main(epochs: int = 6) -> None:
    torch.manual_seed(0)
    x_all = torch.randn(1010, 8)
    y_all = x_all.sum(1, keepdim=True)
    loader = DataLoader(TensorDataset(x_all, y_all), batch_size=100, shuffle=True)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    criterion = nn.MSELoss()
    for epoch in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            loss = criterion(model(x), y) / x.size(0)
            loss.backward()
            optimizer.step()
        print(f"epoch {epoch + 1}: last loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
