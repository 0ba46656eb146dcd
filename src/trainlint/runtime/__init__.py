"""Runtime check mode: watch a real training run through torch hooks (`trainlint run`, `watch()`).

`trainlint.runtime.settings` is importable without torch; everything else imports torch lazily:

    from trainlint.runtime import watch

    with watch() as w:          # or watch(model=model, optimizer=opt, every=50, explode_factor=20)
        train()
    for d in w.findings:        # trainlint.diagnostics.Diagnostic, code TL101..TL115
        print(d.code, d.message)
"""

from __future__ import annotations

from typing import Any

__all__ = ["watch", "Watch"]


def __getattr__(name: str) -> Any:  # PEP 562: import torch only when the API is used
    if name in ("watch", "Watch"):
        from trainlint.runtime import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
