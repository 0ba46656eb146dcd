"""The command line: `trainlint [check] PATHS`, `trainlint rule`, `trainlint run`."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import List, Sequence

import click

from trainlint import __version__
from trainlint.codes import did_you_mean
from trainlint.runtime.settings import DEFAULTS as RUNTIME_DEFAULTS

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


class DefaultGroup(click.Group):
    """`trainlint PATHS` means `trainlint check PATHS`, as `ruff PATHS` once meant `ruff check`."""

    def parse_args(self, ctx, args):
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h", "--version")):
            first = args[0] if args else ""
            # `trainlint chek .`: a word that is no path but close to a command is a typo, not a path.
            if first and first.isidentifier() and not os.path.lexists(first):
                close = did_you_mean(first, self.commands)
                if close:
                    ctx.fail(f"unknown command `{first}`; did you mean `{close}`?")
            args = ["check", *args]
        return super().parse_args(ctx, args)

    def format_usage(self, ctx, formatter):
        formatter.write("Usage: trainlint [check] [OPTIONS] [PATHS]...\n       trainlint COMMAND [ARGS]...\n")


CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(cls=DefaultGroup, context_settings=CONTEXT, invoke_without_command=False)
@click.version_option(__version__, "--version", prog_name="trainlint")
def main():
    """Find the bugs that make deep-learning training spike, go NaN or silently stop learning.

    \b
    Static linter (the default command):
      trainlint src/                     lint files and folders (default: .)
      trainlint --fix src/               apply safe fixes
      trainlint rule TL001               explain a rule
    Runtime checks:
      trainlint run train.py [ARGS]...   run a script and watch the training for NaN, spikes, ...

    Exit status: 0 no findings, 1 findings left, 2 usage, configuration or internal error.
    `trainlint check --help` lists the linter's options, `trainlint run --help` the runtime mode's.
    """
    # A Linux file name is any bytes: names that are not UTF-8 must not crash the output.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):  # pragma: no cover
                pass


def _split_codes(values: Sequence[str]) -> List[str]:
    out: List[str] = []
    for v in values:
        out.extend(c.strip().upper() for c in v.split(",") if c.strip())
    return out


@main.command("check", context_settings=CONTEXT, short_help="Lint files and folders (the default command).")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--select", multiple=True, metavar="CODES", help="Rules to enable (comma-separated codes or prefixes, e.g. TL001,TL00). Replaces the configured set.")
@click.option("--extend-select", multiple=True, metavar="CODES", help="Rules to enable in addition to the configured ones.")
@click.option("--ignore", multiple=True, metavar="CODES", help="Rules to disable.")
@click.option("--fix/--no-fix", default=False, help="Apply safe fixes (with --unsafe-fixes also the unsafe ones).")
@click.option("--unsafe-fixes/--no-unsafe-fixes", default=None, help="Allow fixes that may change behaviour.")
@click.option("--diff", is_flag=True, help="Print the fixes as a unified diff and write nothing (exit 1 if there are any).")
@click.option("--show-fixes", is_flag=True, help="List the fixes applied by --fix.")
@click.option("--output-format", type=click.Choice(["full", "concise", "json", "json-lines", "github", "sarif"]), default=None, help="How to print findings. [default: full, or concise with -q]")
@click.option("--statistics", is_flag=True, help="Print the number of findings per rule instead of the findings.")
@click.option("--exit-zero", is_flag=True, help="Exit with 0 even when findings remain.")
@click.option("--exit-non-zero-on-fix", is_flag=True, help="Exit with 1 if any fix was applied, even if nothing remains.")
@click.option("--config", "config_path", type=click.Path(), metavar="PATH", help="Use this configuration file (pyproject.toml or trainlint.toml) for every file instead of discovering one.")
@click.option("--extend-exclude", multiple=True, metavar="PATTERN", help="More paths to exclude (globs).")
@click.option("--force-exclude", is_flag=True, help="Apply excludes also to paths named on the command line (for pre-commit).")
@click.option("--no-cache", is_flag=True, help="Do not read or write the cache.")
@click.option("--cache-dir", type=click.Path(), metavar="DIR", help="Where to keep the cache. [default: .trainlint_cache]")
@click.option("--stdin-filename", metavar="NAME", help="With '-' as the path: the name of the file read from standard input.")
@click.option("-j", "--jobs", type=click.IntRange(0), default=0, metavar="N", help="Processes to use (0: one per core).")
@click.option("--respect-gitignore/--no-respect-gitignore", default=None, help="Skip files ignored by git (.gitignore, .git/info/exclude, the global excludes file) while walking folders. [default: respect-gitignore setting, true]")
@click.option("-o", "--output-file", type=click.Path(dir_okay=False, writable=True), metavar="PATH", help="Write the findings to PATH instead of standard output.")
@click.option("-q", "--quiet", is_flag=True, help="Print findings only, no summary or progress.")
def check(paths, select, extend_select, ignore, fix, unsafe_fixes, diff, show_fixes, output_format,
          statistics, exit_zero, exit_non_zero_on_fix, config_path, extend_exclude, force_exclude,
          no_cache, cache_dir, stdin_filename, jobs, respect_gitignore, output_file, quiet):
    """Lint PATHS (files or folders; default: the current folder).

    \b
    Examples:
      trainlint .                           lint the project
      trainlint --select TL001 train.py     one rule, one file
      trainlint --fix --unsafe-fixes src/   apply every fix
      trainlint --output-format json src/   machine-readable findings
    """
    from trainlint.checker import CheckOptions, run_check
    from trainlint.files import set_respect_gitignore

    paths = list(paths) or ["."]
    missing = [p for p in paths if p != "-" and not os.path.lexists(p)]
    if missing and len(missing) == len(paths):
        for p in missing:
            click.echo(f"trainlint: error: {p}: no such file or directory", err=True)
        sys.exit(EXIT_ERROR)  # nothing to lint: the error naming the path, and nothing else
    warn_runtime_codes(select, "--select")
    warn_runtime_codes(extend_select, "--extend-select")
    set_respect_gitignore(respect_gitignore)

    opts = CheckOptions(
        paths=paths,
        select=_split_codes(select),
        extend_select=_split_codes(extend_select),
        ignore=_split_codes(ignore),
        fix=fix,
        unsafe_fixes=unsafe_fixes,
        diff=diff,
        show_fixes=show_fixes,
        output_format=output_format or ("concise" if quiet else "full"),
        statistics=statistics,
        exit_zero=exit_zero,
        exit_non_zero_on_fix=exit_non_zero_on_fix,
        config_path=config_path,
        extend_exclude=list(extend_exclude),
        force_exclude=force_exclude,
        no_cache=no_cache,
        cache_dir=cache_dir,
        stdin_filename=stdin_filename,
        jobs=jobs,
        quiet=quiet or bool(missing),  # others are linted, but no "All checks passed!" on an exit of 2
    )
    sys.exit(_run_to(output_file, diff, lambda: run_check(opts)))


def _run_to(output_file, diff: bool, body) -> int:
    """Run `body` with standard output sent to `output_file` (Ruff's `-o`), and a `--diff` coloured
    when it goes to a terminal (never with NO_COLOR, never into a file or a pipe)."""
    from trainlint.output.style import DiffColourStream, Style

    if output_file:
        try:
            fh = open(output_file, "w", encoding="utf-8", errors="backslashreplace", newline="")
        except OSError as exc:
            click.echo(f"trainlint: error: cannot write {output_file}: {exc.strerror or exc}", err=True)
            return EXIT_ERROR
        with fh, contextlib.redirect_stdout(fh):
            return body()
    if diff and Style.for_stream(sys.stdout).enabled:
        stream = DiffColourStream(sys.stdout)
        try:
            with contextlib.redirect_stdout(stream):
                return body()
        finally:
            stream.flush()
    return body()


def warn_runtime_codes(values: Sequence[str], flag: str) -> None:
    """`--select TL101` on the linter would check nothing: say so (Ruff warns on selectors that match
    nothing it can run)."""
    from trainlint.codes import CODES, STATIC_CODES

    for sel in _split_codes(values):
        if sel == "ALL" or any(c.startswith(sel) for c in STATIC_CODES) or not any(c.startswith(sel) for c in CODES):
            continue
        click.echo(
            f"trainlint: warning: {sel} in {flag} selects only runtime checks, which the linter does not "
            f"run; use it with `trainlint run --select {sel}`",
            err=True,
        )


@main.command("rule", context_settings=CONTEXT, short_help="Explain a rule, or list them all.")
@click.argument("code", required=False)
@click.option("--all", "show_all", is_flag=True, help="List every rule: code, name, fix, summary.")
@click.option("--output-format", type=click.Choice(["text", "json"]), default="text")
def rule(code, show_all, output_format):
    """Explain a rule (e.g. `trainlint rule TL001`), or list them all with --all."""
    from trainlint.rule_pages import print_rule, print_rules

    if show_all or not code:
        sys.exit(print_rules(output_format))
    sys.exit(print_rule(code, output_format))


@main.command("run", context_settings={**CONTEXT, "ignore_unknown_options": True, "allow_interspersed_args": False},
              short_help="Run a training script with runtime checks attached.")
@click.option("-m", "module", is_flag=True, help="Run TARGET as a module, like `python -m`.")
@click.option("--output-format", type=click.Choice(["full", "concise", "json", "json-lines", "github", "sarif"]), default="full", help="How to print findings. With json, json-lines or sarif and no -o, the script's own stdout goes to stderr so that stdout holds only the findings.")
@click.option("-o", "--output-file", type=click.Path(dir_okay=False), metavar="PATH", help="Write the findings to PATH instead of standard output (checked before the script starts).")
@click.option("--report", type=click.Path(dir_okay=False), metavar="PATH.html", help="Also write a self-contained HTML report with loss and gradient-norm plots (checked before the script starts).")
@click.option("--select", multiple=True, metavar="CODES", help="Runtime checks to enable (default: all TL1xx).")
@click.option("--ignore", multiple=True, metavar="CODES", help="Runtime checks to disable.")
@click.option("--every", type=click.IntRange(1), default=None, metavar="N",
              help=f"Read device-side values every N steps (default {RUNTIME_DEFAULTS['every']}).")
@click.option("--config", "config_path", type=click.Path(), metavar="PATH", help="pyproject.toml with [tool.trainlint.runtime] thresholds.")
@click.option("-q", "--quiet", is_flag=True, help="Print findings only.")
@click.argument("target")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def run(module, output_format, output_file, report, select, ignore, every, config_path, quiet, target, args):
    """Run a training script (or -m MODULE) with runtime checks attached.

    The script runs in this process exactly as `python SCRIPT ARGS...` would (same sys.argv, __main__,
    working directory and exit status). Findings print when it ends, even if it fails or is interrupted.
    Exit status: the script's own when nothing is found (or nothing was checked); 1 when there are
    findings and the script succeeded; 2 for usage errors. Needs torch (`pip install "trainlint[runtime]"`).

    \b
    Example:
      trainlint run --report run.html train.py --epochs 3
    """
    try:
        from trainlint.runtime.runner import run_main
    except ImportError as exc:  # pragma: no cover - torch missing
        click.echo(f"trainlint: error: the runtime mode needs torch: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    sys.exit(
        run_main(
            target=target,
            args=list(args),
            module=module,
            output_format=output_format,
            report=report,
            select=_split_codes(select),
            ignore=_split_codes(ignore),
            every=every,
            config_path=config_path,
            quiet=quiet,
            output_file=output_file,
        )
    )


@main.command("server", context_settings=CONTEXT, short_help="Run the Language Server (LSP over stdio) for editors.")
@click.option("--stdio", is_flag=True, help="Talk over standard input/output (the default and only transport; accepted for clients that pass it).")
@click.option("--debounce", type=click.IntRange(0), default=100, show_default=True, metavar="MS", help="Lint this long after the last change while typing.")
@click.option("--config", "config_path", type=click.Path(), metavar="PATH", help="Use this configuration file for every document instead of discovering one.")
@click.option("--log-file", type=click.Path(dir_okay=False), metavar="PATH", help="Write the server's log there instead of standard error.")
@click.option("-v", "--verbose", is_flag=True, help="Log every message (debugging a client set-up).")
def server(stdio, debounce, config_path, log_file, verbose):
    """Run the Language Server for editors (LSP over standard input/output).

    Findings appear as you type in .py files and Jupyter notebooks, with the rule's page linked; code
    actions apply a finding's fix (unsafe ones are labelled), fix all safe fixes
    (source.fixAll.trainlint) or add `# noqa: TLxxx`. The configuration ([tool.trainlint] in
    pyproject.toml, trainlint.toml) is found per file as for `trainlint check` and reloaded when it
    changes. Start it from the editor, not by hand; README's "Editors" section has the set-ups for
    VS Code, Neovim, Helix and Emacs. Needs pygls: pip install "trainlint[lsp]".

    \b
    Example (Neovim):
      vim.lsp.start({ name = "trainlint", cmd = { "trainlint", "server" } })
    """
    try:
        import pygls  # noqa: F401  (only checked here: the linter itself never needs it)
    except ImportError:
        click.echo('trainlint: error: `trainlint server` needs pygls; install it with: pip install "trainlint[lsp]"', err=True)
        sys.exit(EXIT_ERROR)
    from trainlint.server import serve

    sys.exit(serve(debounce_ms=debounce, config_path=config_path, log_file=log_file, verbose=verbose))


if __name__ == "__main__":  # pragma: no cover
    main()
