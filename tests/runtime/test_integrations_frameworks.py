"""The Lightning and Hugging Face callbacks, on tiny models built in the test (no downloads). Skipped when
the framework is not installed (neither is a dependency of trainlint)."""

from __future__ import annotations

import io
import math

import pytest

torch = pytest.importorskip("torch")

import runtime_scenarios as S  # noqa: E402

from trainlint.runtime.integrations import huggingface_callback, lightning_callback  # noqa: E402


def _pl():
    try:
        import lightning.pytorch as pl
    except ImportError:
        pl = pytest.importorskip("pytorch_lightning")
    return pl


def _lightning_fit(lr: float, epochs: int = 2):
    pl = _pl()
    from torch import nn

    class Classifier(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))

        def training_step(self, batch, _):
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=lr)

    torch.manual_seed(1)
    loader = torch.utils.data.DataLoader(S._blobs(n=2048, seed=1, spread=1.0), batch_size=32, shuffle=True)
    out = io.StringIO()
    cb = lightning_callback(output_format="concise", stream=out)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[cb])
    trainer.fit(Classifier(), loader)
    return cb, out.getvalue()


def test_lightning_callback_is_silent_on_a_healthy_fit():
    cb, out = _lightning_fit(lr=1e-3, epochs=1)
    assert cb.findings == [] and out == ""
    assert cb.watch is None  # detached at the end of fit


def test_lightning_callback_finds_a_learning_rate_far_too_high():
    cb, out = _lightning_fit(lr=1.0, epochs=3)
    codes = sorted({d.code for d in cb.findings})
    assert "TL109" in codes and "TL110" in codes, [(d.code, d.message) for d in cb.findings]
    assert "TL109" in out
    d = [d for d in cb.findings if d.code == "TL109"][0]
    assert d.runtime["step"] <= 3 and math.isfinite(d.runtime["evidence"]["peak_loss"])


@pytest.mark.parametrize("lr", [1e-3, 1.0])
def test_huggingface_callback_on_a_tiny_model(lr):
    transformers = pytest.importorskip("transformers")
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10))

        def forward(self, x, labels=None):
            logits = self.net(x)
            loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
            return {"loss": loss, "logits": logits}

    torch.manual_seed(0)
    data = S._blobs(n=512, seed=0)

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return len(data)

        def __getitem__(self, i):
            x, y = data[i]
            return {"x": x, "labels": y}

    out = io.StringIO()
    cb = huggingface_callback(output_format="concise", stream=out)
    args = transformers.TrainingArguments(output_dir="/tmp/trainlint-hf-test", per_device_train_batch_size=32,
                                          num_train_epochs=1, report_to=[], use_cpu=True, save_strategy="no",
                                          logging_strategy="no", learning_rate=lr, seed=0)
    transformers.Trainer(model=Tiny(), args=args, train_dataset=DS(), callbacks=[cb]).train()
    if lr < 0.1:
        assert cb.findings == [], [(d.code, d.message) for d in cb.findings]
        assert out.getvalue() == ""
    else:  # Adam at lr=1 (the Trainer clips at 1.0 and decays the rate linearly): the loss explodes
        assert "TL109" in {d.code for d in cb.findings}, [(d.code, d.message) for d in cb.findings]
        assert "TL109" in out.getvalue()
