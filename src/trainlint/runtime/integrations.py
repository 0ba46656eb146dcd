"""Callbacks that attach the runtime checks inside training frameworks, for users who do not start their
runs with `trainlint run`:

    from trainlint.runtime.integrations import lightning_callback, huggingface_callback

    trainer = lightning.Trainer(callbacks=[lightning_callback()])         # Lightning
    trainer = transformers.Trainer(..., callbacks=[huggingface_callback()])  # Hugging Face

Each callback starts `watch(model=...)` when training starts and stops it when training ends (or
raises), prints the findings (`output_format`, default "full"; None prints nothing) to stderr or the
given stream, writes `report` if given, and keeps them in `.findings`. Keyword arguments go to `watch()`
(`every=`, `select=`, thresholds). The frameworks are imported only when a callback is made; neither is
a dependency of trainlint.
"""

from __future__ import annotations

import sys
from typing import Any, List, Optional, TextIO


class _Attached:
    """The part both callbacks share: one `Watch` from the start of training to its end."""

    def _setup(self, output_format: Optional[str], report: Optional[str], stream: Optional[TextIO],
               kwargs: Any) -> None:
        self.output_format = output_format
        self.report = report
        self.stream = stream
        self.watch_kwargs = kwargs
        self.watch: Any = None
        self._findings: List[Any] = []

    def _start(self, model: Any) -> None:
        from trainlint.runtime.api import watch

        if self.watch is None:
            self.watch = watch(model=model, report=self.report, **self.watch_kwargs).start()

    def _stop(self) -> None:
        w, self.watch = self.watch, None
        if w is None:
            return
        w.stop()
        self._findings = w.findings
        if self.output_format and self._findings:
            w.render(self.output_format, self.stream or sys.stderr)

    @property
    def findings(self) -> List[Any]:
        """The findings of the last training run (so far, while it runs)."""
        return self.watch.findings if self.watch is not None else list(self._findings)


def _lightning():
    try:
        import lightning.pytorch as pl
    except ImportError:
        try:
            import pytorch_lightning as pl  # the older package name
        except ImportError as exc:
            raise ImportError("lightning_callback() needs Lightning (`pip install lightning`)") from exc
    return pl


def lightning_callback(output_format: Optional[str] = "full", report: Optional[str] = None,
                       stream: Optional[TextIO] = None, **watch_kwargs: Any):
    """A Lightning `Callback` watching `trainer.fit()` (see the module docstring)."""
    pl = _lightning()

    class TrainlintCallback(_Attached, pl.Callback):
        def __init__(self) -> None:
            super().__init__()
            self._setup(output_format, report, stream, watch_kwargs)

        def on_fit_start(self, trainer, pl_module) -> None:
            self._start(pl_module)

        def on_fit_end(self, trainer, pl_module) -> None:
            self._stop()

        def on_exception(self, trainer, pl_module, exception) -> None:
            self._stop()

    return TrainlintCallback()


def huggingface_callback(output_format: Optional[str] = "full", report: Optional[str] = None,
                         stream: Optional[TextIO] = None, **watch_kwargs: Any):
    """A Hugging Face `TrainerCallback` watching `Trainer.train()` (see the module docstring)."""
    try:
        from transformers import TrainerCallback
    except ImportError as exc:
        raise ImportError("huggingface_callback() needs transformers (`pip install transformers`)") from exc

    class TrainlintCallback(_Attached, TrainerCallback):
        def __init__(self) -> None:
            super().__init__()
            self._setup(output_format, report, stream, watch_kwargs)

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self._start(model)
            return control

        def on_train_end(self, args, state, control, **kwargs):
            self._stop()
            return control

    return TrainlintCallback()


__all__ = ["lightning_callback", "huggingface_callback"]
