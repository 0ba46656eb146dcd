"""The Python API, for runs `trainlint run` cannot wrap (Lightning, Accelerate, torchrun workers,
notebooks): `with watch() as w: ...; w.findings`."""

from __future__ import annotations

import sys
from typing import Any, Dict, List, Optional, Sequence, TextIO, Union

from trainlint.codes import RUNTIME_CODES, expand_selectors
from trainlint.diagnostics import Diagnostic
from trainlint.runtime.settings import OFF_BY_DEFAULT, resolve


def _as_list(x: Any) -> List[Any]:
    if x is None:
        return []
    if isinstance(x, (list, tuple, set)):
        return list(x)
    return [x]


def selected_codes(select: Optional[Sequence[str]] = None, ignore: Optional[Sequence[str]] = None) -> List[str]:
    """Runtime codes after --select (default: all TL1xx but those off by default) and --ignore;
    ValueError on an unknown one. A check off by default (`settings.OFF_BY_DEFAULT`) runs only when a
    selector names it exactly, or `ALL`."""
    codes = expand_selectors(list(select) if select else ["TL1"], RUNTIME_CODES)
    named = {s.strip().upper() for s in select or []}
    codes = [c for c in codes if c not in OFF_BY_DEFAULT or c in named or "ALL" in named]
    ignored = set(expand_selectors(list(ignore or []), RUNTIME_CODES))
    return [c for c in codes if c not in ignored]


class Watch:
    """Runtime checks attached to everything torch does while active.

    model / optimizer: optional; a model gives better parameter and module names, optimizers restrict
    the checks to those optimizers (default: every optimizer that steps). `every`: optimizer steps
    between reads of device values. Thresholds as keyword arguments (`explode_factor=20`) or from
    `[tool.trainlint.runtime]` of the nearest pyproject.toml (`config=None`: discover from the working
    directory; a path: that file; False: none).
    """

    def __init__(self, model: Any = None, optimizer: Any = None, *, every: Optional[int] = None,
                 select: Optional[Sequence[str]] = None, ignore: Optional[Sequence[str]] = None,
                 config: Union[None, bool, str] = None, report: Optional[str] = None,
                 settings: Optional[Dict[str, Any]] = None, **thresholds: Any):
        if settings is None:
            table: Dict[str, Any] = {}
            if config is not False:
                import os

                from trainlint.config import ConfigResolver

                table = dict(ConfigResolver(config if isinstance(config, str) else None)
                             .for_dir(os.getcwd()).runtime)
            table.update({k.replace("_", "-"): v for k, v in thresholds.items()})
            settings = resolve(table, every)
        elif thresholds or every is not None:
            settings = resolve({**settings, **{k.replace("_", "-"): v for k, v in thresholds.items()}}, every)
        self.settings = settings
        self.codes = selected_codes(select, ignore)
        self.models = _as_list(model)
        self.optimizers = _as_list(optimizer) if optimizer is not None else None
        self.report_path = report
        self._monitor = None
        self._owner = False
        self._final: Optional[List[Diagnostic]] = None

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> "Watch":
        from trainlint.runtime.monitor import Monitor, active_monitor

        if self._monitor is not None:
            return self
        current = active_monitor()
        if current is not None:
            # already watched (e.g. `trainlint run` around a script that uses watch()): share it
            self._monitor, self._owner = current, False
            current.models.extend(m for m in self.models if all(m is not x for x in current.models))
            return self
        self._monitor = Monitor(self.settings, self.codes, self.models, self.optimizers)
        self._monitor.attach()
        self._owner = True
        return self

    def stop(self) -> None:
        m = self._monitor
        if m is None or self._final is not None:
            return
        if self._owner:
            m.close()
            self._final = m.diagnostics()
            if self.report_path:
                self.write_report(self.report_path)

    def __enter__(self) -> "Watch":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---------------------------------------------------------------- results
    @property
    def monitor(self):
        return self._monitor

    @property
    def findings(self) -> List[Diagnostic]:
        """The findings so far (flushes pending device values while watching), final after stop()."""
        if self._final is not None:
            return list(self._final)
        if self._monitor is None:
            return []
        return self._monitor.diagnostics()

    @property
    def steps(self) -> int:
        return self._monitor.step if self._monitor else 0

    @property
    def epochs(self) -> int:
        return self._monitor.epochs if self._monitor else 0

    def render(self, output_format: str = "full", stream: Optional[TextIO] = None) -> None:
        """Print the findings in one of the output formats (full, concise, json, json-lines, github)."""
        from trainlint.output import renderer
        from trainlint.output.style import Style

        stream = stream or sys.stdout
        renderer(output_format).render(self.findings, stream, style=Style.for_stream(stream),
                                       unsafe_fixes=False)

    def write_report(self, path: str) -> None:
        """Write the self-contained HTML report (loss and gradient-norm plots, findings)."""
        from trainlint.runtime.report import write_report

        write_report(path, self._monitor, self.findings)


def watch(model: Any = None, optimizer: Any = None, **kwargs: Any) -> Watch:
    """`with watch() as w: train()` -- see `Watch`."""
    return Watch(model, optimizer, **kwargs)


__all__ = ["Watch", "watch", "selected_codes"]
