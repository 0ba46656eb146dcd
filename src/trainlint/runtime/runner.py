"""`trainlint run [OPTIONS] SCRIPT [ARGS]...` / `trainlint run -m MODULE [ARGS]...`.

The script runs in this process as `python SCRIPT ARGS` would run it (sys.argv, `__main__`,
sys.path[0] = the script's folder, working directory), with the runtime checks attached; the findings
print when it ends, however it ends.

Where the findings go: `-o PATH` writes them to PATH (in the chosen format), never mixed with the
script's output. Without `-o`, the human formats (full, concise) print on stdout after the script's own
output; with a machine format (json, json-lines, sarif) stdout holds only the findings: the script's own
stdout is sent to stderr while it runs (at the file-descriptor level, so child processes too). The
github format prints annotations on stdout, where the Actions runner reads them, next to the script's
output.

Exit status:
  the script's own status when there is no finding (0, the `sys.exit` code, 1 for an uncaught
  exception, 130 for Ctrl-C), also when nothing was checked (no backward() or step() seen);
  1 when there are findings and the script succeeded (a failing script keeps its own non-zero status);
  2 for a usage or configuration error (unknown code, bad threshold, no such script/module, torch
  missing, a report or output path that cannot be written: all found before the script starts), or
  when the checks themselves failed and there is nothing else to report.

Under torchrun (`torchrun --nproc_per_node N -m trainlint run train.py`) every worker runs this; at the
end the workers send their findings to rank 0, which prints one report (each finding names its rank),
writes `-o`/`--report`, and exits as above; the other ranks print one line on stderr and keep the
script's own status.
"""

from __future__ import annotations

import os
import runpy
import sys
import traceback
from typing import List, Optional, Sequence

EXIT_FINDINGS, EXIT_ERROR, EXIT_INTERRUPT = 1, 2, 130
MACHINE_FORMATS = ("json", "json-lines", "sarif")
NEEDS_TORCH = 'the runtime mode needs torch (pip install "trainlint[runtime]")'


def _err(msg: str) -> None:
    sys.stderr.write(f"trainlint: error: {msg}\n")


def _warn(msg: str) -> None:
    sys.stderr.write(f"trainlint: warning: {msg}\n")


def _exit_status(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, bool):
        return int(code)
    if isinstance(code, int):
        return code & 0xFF if code >= 0 else code % 256
    sys.stderr.write(f"{code}\n")  # sys.exit("message") prints it, exit status 1 (as Python does)
    sys.stderr.flush()
    return 1


def _print_traceback(exc: BaseException) -> None:
    """Print it as Python would for the script: without trainlint's and runpy's frames."""
    here = os.path.abspath(__file__)
    runpy_files = (os.path.abspath(runpy.__file__), "<frozen runpy>")
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if name not in runpy_files and (name.startswith("<") or os.path.abspath(name) != here):
            break
        tb = tb.tb_next
    sys.stdout.flush()
    traceback.print_exception(type(exc), exc, tb)
    sys.stderr.flush()


def writable_problem(path: str) -> Optional[str]:
    """Why `path` cannot be written (checked before the script runs), or None. Leaves nothing behind."""
    if os.path.isdir(path):
        return "it is a directory"
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        return f"no such directory: {parent}"
    existed = os.path.exists(path)
    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    if not existed:
        try:
            os.remove(path)
        except OSError:  # pragma: no cover - removed meanwhile
            pass
    return None


class _StdoutToStderr:
    """While the script runs: its stdout goes to stderr, so that stdout holds only the findings."""

    def __init__(self) -> None:
        self.saved_fd: Optional[int] = None
        self.saved_obj = None

    def __enter__(self):
        sys.stdout.flush()
        self.saved_obj = sys.stdout
        try:
            fd = sys.stdout.fileno()
            err = sys.stderr.fileno()
        except (AttributeError, OSError, ValueError):  # not a real file (captured): Python level only
            fd = err = None
        if fd is not None and err is not None:
            self.saved_fd = os.dup(fd)
            os.dup2(err, fd)
        sys.stdout = sys.stderr
        return self

    def __exit__(self, *exc):
        try:
            sys.stdout.flush()
        except Exception:  # pragma: no cover - the script closed it
            pass
        sys.stdout = self.saved_obj
        if self.saved_fd is not None:
            try:
                os.dup2(self.saved_fd, sys.stdout.fileno())
            finally:
                os.close(self.saved_fd)
        return False


def resolve_options(select: Sequence[str], ignore: Sequence[str], every: Optional[int],
                    config_path: Optional[str]):
    """(codes, settings) from the command line and [tool.trainlint.runtime]; raises ConfigError."""
    from trainlint.codes import RUNTIME_CODES, expand_selectors
    from trainlint.config import ConfigError, ConfigResolver, validate_cli_codes
    from trainlint.runtime.api import selected_codes
    from trainlint.runtime.settings import SettingsError, resolve

    validate_cli_codes(list(select), "--select")
    validate_cli_codes(list(ignore), "--ignore")
    cfg = ConfigResolver(config_path).for_dir(os.getcwd())
    where = f"{cfg.path}: [tool.trainlint.runtime]" if cfg.path else "[tool.trainlint.runtime]"
    try:
        settings = resolve(cfg.runtime, every, where=where)
    except SettingsError as exc:
        raise ConfigError(str(exc))
    # `ignore` in [tool.trainlint] applies to runtime codes it names; its `select` is the static set
    cfg_ignore = [c for c in cfg.ignore if expand_selectors([c], RUNTIME_CODES)]
    codes = selected_codes(list(select) or None, list(ignore) + cfg_ignore)
    if not codes:
        raise ConfigError(f"no runtime check selected (runtime checks are {RUNTIME_CODES[0]}-{RUNTIME_CODES[-1]})")
    return codes, settings


def run_main(target: str, args: List[str], module: bool = False, output_format: str = "full",
             report: Optional[str] = None, select: Sequence[str] = (), ignore: Sequence[str] = (),
             every: Optional[int] = None, config_path: Optional[str] = None, quiet: bool = False,
             output_file: Optional[str] = None) -> int:
    import importlib.util

    from trainlint.config import ConfigError

    try:
        has_torch = importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        has_torch = False
    if not has_torch:
        _err(NEEDS_TORCH)
        return EXIT_ERROR

    try:
        codes, settings = resolve_options(select, ignore, every, config_path)
    except (ConfigError, ValueError) as exc:
        _err(str(exc))
        return EXIT_ERROR

    if module:
        import importlib.util

        sys.path.insert(0, os.getcwd())
        try:
            spec = importlib.util.find_spec(target)
        except (ImportError, ValueError) as exc:
            spec = None
            _err(f"cannot import module {target!r}: {exc}")
            return EXIT_ERROR
        finally:
            sys.path.pop(0)
        if spec is None:
            _err(f"no module named {target!r}")
            return EXIT_ERROR
    elif not os.path.exists(target):
        _err(f"can't open file {target!r}: no such file")
        return EXIT_ERROR
    for what, path in (("report", report), ("output file", output_file)):
        problem = writable_problem(path) if path else None
        if problem:
            _err(f"cannot write the {what} {path!r}: {problem}")
            return EXIT_ERROR

    try:
        from trainlint.runtime.monitor import Monitor
    except ImportError as exc:  # torch found but broken
        _err(f"{NEEDS_TORCH}: {exc}")
        return EXIT_ERROR

    monitor = Monitor(settings, codes)
    saved_argv, saved_path, saved_cwd = sys.argv[:], sys.path[:], os.getcwd()
    if report:
        report = os.path.abspath(report)  # the script may change the working directory
    if output_file:
        output_file = os.path.abspath(output_file)
    redirect = _StdoutToStderr() if output_format in MACHINE_FORMATS and not output_file else None
    status = 0
    try:
        if module:
            sys.argv = [target, *args]  # run_module replaces argv[0] with the module's file
            sys.path[0:1] = [os.getcwd()]
        else:
            sys.argv = [target, *args]
            sys.path[0:1] = [os.path.dirname(os.path.abspath(target))]
        monitor.attach()
        if redirect is not None:
            redirect.__enter__()
        try:
            if module:
                runpy.run_module(target, run_name="__main__", alter_sys=True)
            else:
                # run_path sets argv[0] and __file__ to the path as typed (argv[0] as Python does;
                # Python 3.9+ would make __file__ absolute)
                runpy.run_path(target, run_name="__main__")
        except SystemExit as exc:
            status = _exit_status(exc)
        except KeyboardInterrupt as exc:
            _print_traceback(exc)
            status = EXIT_INTERRUPT
        except BaseException as exc:  # the script's own failure: Python's traceback, status 1
            _print_traceback(exc)
            status = 1
    finally:
        if redirect is not None:
            redirect.__exit__(None, None, None)
        monitor.close()
        sys.argv, sys.path[:] = saved_argv, saved_path
        try:
            os.chdir(saved_cwd)  # findings' paths are relative to where trainlint was started
        except OSError:
            pass

    try:
        title = f"trainlint run {'-m ' if module else ''}{target}"
        return _finish(monitor, status, output_format, report, quiet, title, output_file)
    except KeyboardInterrupt:  # a second Ctrl-C while printing
        return EXIT_INTERRUPT


def fmt_seconds(x: float) -> str:
    return f"{x:g} s"


def _finish(monitor, status: int, output_format: str, report: Optional[str], quiet: bool,
            title: Optional[str] = None, output_file: Optional[str] = None) -> int:
    from trainlint.output import renderer
    from trainlint.output.full import Sources
    from trainlint.output.style import Style

    diags = monitor.diagnostics()
    sys.stderr.flush()
    sys.stdout.flush()
    ranks = monitor.ranks
    if ranks.active and ranks.rank != 0:
        # a torchrun worker other than rank 0: its findings are in rank 0's report (which names the
        # rank); its exit status stays the script's, so that torchrun does not stop rank 0 before it
        # has printed that report
        if not quiet:
            n = len(diags)
            sys.stderr.write(f"trainlint: rank {ranks.rank}: {n} finding{'s' if n != 1 else ''}, reported by rank 0\n")
            sys.stderr.flush()
        if monitor.errors:
            _err(f"rank {ranks.rank}: the runtime checks failed and stopped watching:\n" + monitor.errors[0])
        return status
    if ranks.active and ranks.missing and not quiet:
        _warn(f"no findings from rank{'s' if len(ranks.missing) != 1 else ''} "
              f"{', '.join(str(r) for r in ranks.missing)} within {fmt_seconds(monitor.settings['rank-wait'])} "
              f"(rank-wait): the report holds the other ranks' findings only")
    human = output_format in ("full", "concise")
    nothing = monitor.loss_count == 0 and monitor.step == 0
    failed = False
    if output_file:
        try:
            with open(output_file, "w", encoding="utf-8") as fh:
                # a file never gets colour codes
                renderer(output_format).render(diags, fh, style=Style(False), sources=Sources(),
                                               unsafe_fixes=False)
        except OSError as exc:
            _err(f"cannot write the output file {output_file!r}: {exc.strerror or exc}")
            failed = True
        summary_stream = sys.stderr
    else:
        out = sys.stdout
        if human and diags and not quiet:
            out.write("\n")
        renderer(output_format).render(diags, out, style=Style.for_stream(out), sources=Sources(),
                                       unsafe_fixes=False)
        out.flush()
        summary_stream = sys.stdout if human else sys.stderr
    if not quiet and (human or output_file or nothing):
        seen = f"{monitor.step} optimizer step{'s' if monitor.step != 1 else ''}"
        by_hand = monitor.step == 0 and monitor.loss_count > 0
        if by_hand:  # losses, but no torch.optim step: parameters updated by hand, or not at all
            seen = f"{monitor.loss_count} loss{'es' if monitor.loss_count != 1 else ''}, no optimizer step"
        if monitor.epochs:
            seen += f", {monitor.epochs} epoch{'s' if monitor.epochs != 1 else ''}"
        if nothing:
            line = ("Nothing was checked: no backward() call or optimizer step was seen "
                    "(runtime checks, 0 optimizer steps watched).\n")
            summary_stream = sys.stderr if not human or output_file else summary_stream
        elif diags:
            n = len(diags)
            line = f"Found {n} error{'s' if n != 1 else ''} (runtime checks, {seen} watched).\n"
        else:
            line = f"All checks passed! (runtime checks, {seen} watched)\n"
        if output_file and not nothing:
            line = line.rstrip("\n").rstrip(".") + f"; findings written to {output_file}\n"
        summary_stream.write(line)
        if by_hand:
            summary_stream.write(
                "  only the loss and data checks ran: no torch.optim optimizer stepped, so the gradient and "
                "update checks (TL102, TL103, TL105-TL108, TL113, TL114) had nothing to look at; they need "
                "`optimizer.step()` (parameters updated by hand are not seen)\n")
        summary_stream.flush()
    if monitor.errors:
        _err("the runtime checks failed and stopped watching (please report this):\n" + monitor.errors[0])
        failed = True
    if report:
        from trainlint.runtime.report import write_report

        try:
            write_report(report, monitor, diags, title)
            if not quiet:
                sys.stderr.write(f"trainlint: report written to {report}\n")
        except OSError as exc:
            _err(f"cannot write the report {report!r}: {exc.strerror or exc}")
            failed = True
    if diags:
        return status if status != 0 else EXIT_FINDINGS
    if failed and status == 0:
        return EXIT_ERROR
    return status
