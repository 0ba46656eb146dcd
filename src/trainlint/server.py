"""`trainlint server`: the Language Server (LSP over stdio) that editors talk to.

Built on pygls (the optional extra `trainlint[lsp]`; the command line checks for it before importing this
module). What the server does, all with the linter's own code (`engine.lint_text`, `fixer`, `config`,
`notebook`), so the editor shows what `trainlint .` shows:

- diagnostics when a document is opened, changed (debounced) or saved, for Python files and notebook
  documents (one set per cell, positions within the cell), each with its code, severity and the rule's
  page as `codeDescription.href`; the configuration that applies to the file (select, ignore,
  per-file-ignores, exclude, rule options) and `noqa` comments are honoured;
- project-wide facts: the modules a file imports are read from disk by `analysis/project.py`, as for the
  CLI; each lint records the files it read (`LintResult.deps`), and when one of them changes on disk
  (saved in the editor, or a watched-file event) the in-memory facts of its project are dropped and
  every open document that used it is linted again;
- code actions: each finding's fix (safe ones as `quickfix`, unsafe ones as `quickfix.unsafe.trainlint`
  and labelled "unsafe"), "suppress with `# noqa: TLxxx`", and `source.fixAll.trainlint` (all safe
  fixes, also the unsafe ones where the configuration sets `unsafe-fixes = true`, as `trainlint --fix`);
  the command `trainlint.applyFixAll` does the same through `workspace/applyEdit`;
- a changed `pyproject.toml`/`trainlint.toml`/`.trainlint.toml` reloads the configuration; a bad one is
  shown with `window/showMessage` and the files it governs are linted with the defaults meanwhile;
- whatever goes wrong inside a lint becomes a TL000 diagnostic for that document, and the server goes
  on. Like the CLI, it never imports or runs the code it lints.

Linting runs on one worker thread (the project's memoised facts are not shared between threads), so the
server keeps answering requests while a lint is under way.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import sys
import tokenize
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.uris import to_fs_path

from trainlint import __version__
from trainlint.codes import CODES, rule_url
from trainlint.config import CONFIG_FILES, ConfigError, ConfigResolver, Settings
from trainlint.diagnostics import Applicability, Diagnostic, Fix
from trainlint.engine import LintResult, file_error

logger = logging.getLogger("trainlint.server")

SOURCE = "trainlint"
FIX_ALL_KIND = "source.fixAll.trainlint"
UNSAFE_KIND = "quickfix.unsafe.trainlint"
FIX_ALL_COMMAND = "trainlint.applyFixAll"
DEFAULT_DEBOUNCE_MS = 100
_NEWLINE = re.compile(r"\r\n|\r|\n")
PYTHON_SUFFIXES = (".py", ".pyi")


# -- text positions (no pygls types needed) -------------------------------------------------------------

def _units(text: str, encoding: str) -> int:
    """Length of `text` in the client's position units."""
    if encoding == "utf-8":
        return len(text.encode("utf-8", "surrogatepass"))
    if encoding == "utf-32":
        return len(text)
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


class Lines:
    """Line starts of a text, with the LSP's (and LibCST's) line breaks: \\n, \\r\\n, \\r."""

    def __init__(self, text: str):
        self.text = text
        self.starts = [0] + [m.end() for m in _NEWLINE.finditer(text)]

    def line(self, row0: int) -> str:
        if row0 < 0 or row0 >= len(self.starts):
            return ""
        end = self.starts[row0 + 1] if row0 + 1 < len(self.starts) else len(self.text)
        return self.text[self.starts[row0]:end].rstrip("\r\n")

    def position(self, offset: int, encoding: str) -> Tuple[int, int]:
        """(line, character) of a character offset, in client units."""
        import bisect

        offset = max(0, min(offset, len(self.text)))
        row0 = bisect.bisect_right(self.starts, offset) - 1
        return row0, _units(self.text[self.starts[row0]:offset], encoding)

    def client(self, row: int, column: int, encoding: str) -> Tuple[int, int]:
        """trainlint's 1-based (row, column in characters) -> LSP's 0-based (line, units)."""
        row0 = max(row - 1, 0)
        if row0 >= len(self.starts):
            return len(self.starts) - 1, _units(self.line(len(self.starts) - 1), encoding)
        line = self.line(row0)
        return row0, _units(line[: max(column - 1, 0)], encoding)


def minimal_edit(old: str, new: str) -> Optional[Tuple[int, int, str]]:
    """One replacement (start, end, text) turning `old` into `new`, trimmed to what differs (cursors and
    folds elsewhere in the document stay put); None if they are equal."""
    if old == new:
        return None
    p = 0
    n = min(len(old), len(new))
    while p < n and old[p] == new[p]:
        p += 1
    s = 0
    while s < n - p and old[len(old) - 1 - s] == new[len(new) - 1 - s]:
        s += 1
    # never split a \r\n pair
    if p > 0 and old[p - 1] == "\r":
        p -= 1
    if s > 0 and old[len(old) - s] == "\n" and len(old) - s - 1 >= 0 and old[len(old) - s - 1] == "\r":
        s -= 1
    return p, len(old) - s, new[p:len(new) - s]


# -- linting a document (no pygls types needed) -------------------------------------------------------

@dataclass
class Snapshot:
    """One lint of one open document: what was linted and what was found."""

    uri: str
    version: Optional[int]
    path: str  # the file name given to the linter (for config, project facts and messages)
    text: str  # the module text; for a notebook the joined code cells
    diagnostics: List[Diagnostic] = field(default_factory=list)  # notebook: mapped to cells
    raw: List[Diagnostic] = field(default_factory=list)  # notebook: positions in the joined text
    deps: Dict[str, str] = field(default_factory=dict)
    codes: List[str] = field(default_factory=list)
    options: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    unsafe: bool = False
    excluded: bool = False
    notebook: Any = None  # trainlint.notebook.Notebook
    cells: List[Tuple[str, str]] = field(default_factory=list)  # notebook: (cell uri, text) in order
    fix_edits: Dict[int, Any] = field(default_factory=dict)  # index in `raw` -> its fix's WorkspaceEdit


def safe_lint(text: str, filename: str, codes: Sequence[str], options) -> LintResult:
    """`engine.lint_text`, but nothing escapes: any failure becomes a TL000 finding."""
    from trainlint.engine import lint_text

    try:
        return lint_text(text, filename, list(codes), options)
    except RecursionError:
        return LintResult(filename, [file_error(filename, "code is nested too deeply to analyse")])
    except Exception as exc:  # a bug anywhere in the linter: report it on the document, keep serving
        logger.exception("internal error while linting %s", filename)
        return LintResult(filename, [file_error(
            filename, f"internal error: {type(exc).__name__}: {exc}; please report this at "
                      "https://github.com/trainlint/trainlint/issues")])


def safe_fix(text: str, filename: str, codes, options, unsafe: bool) -> str:
    """The text with every applicable fix applied (the CLI's `--fix`); the text itself on any failure."""
    from trainlint.fixer import fix_text
    from trainlint.source import detect_newline

    try:
        new_text, _, _ = fix_text(text, filename, list(codes), options, unsafe, detect_newline(text))
        return new_text
    except Exception:  # pragma: no cover - a fixer bug must not take the server down
        logger.exception("internal error while fixing %s", filename)
        return text


def apply_one_fix(text: str, fix: Fix) -> Optional[str]:
    """`text` with one fix applied, or None when the result would not parse (the CLI's re-parse check)."""
    from trainlint.engine import parse
    from trainlint.fixer import apply_fixes
    from trainlint.source import SourceError, detect_newline

    try:
        new_text, applied = apply_fixes(text, [fix], detect_newline(text))
        if not applied or new_text == text:
            return None
        parse(new_text)
        return new_text
    except (SourceError, RecursionError):
        return None
    except Exception:  # pragma: no cover
        logger.exception("internal error while applying a fix")
        return None


def noqa_insertion(text: str, row: int, code: str) -> Optional[Tuple[int, str]]:
    """Where and what to insert to suppress `code` on 1-based `row`: extend the line's `# noqa: ...`,
    or add `  # noqa: CODE` at its end. None where a comment cannot go (the line ends inside a string
    or with a backslash continuation)."""
    lines = Lines(text)
    line = lines.line(row - 1)
    if row - 1 >= len(lines.starts) or line.rstrip().endswith("\\"):
        return None
    comment_col = None
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.STRING or tok.type == getattr(tokenize, "FSTRING_MIDDLE", -1):
                if tok.start[0] <= row < tok.end[0]:
                    return None  # the line ends inside a multi-line string
            elif tok.type == tokenize.COMMENT and tok.start[0] == row:
                comment_col = tok.start[1]
            if tok.start[0] > row:
                break
    except (tokenize.TokenError, SyntaxError, IndentationError):
        pass
    start = lines.starts[row - 1]
    if comment_col is not None:
        comment = line[comment_col:]
        m = re.search(r"#\s*noqa(?::\s*[A-Za-z]+[0-9]+(?:\s*,?\s*[A-Za-z]+[0-9]+)*)?", comment, re.IGNORECASE)
        if m is not None:
            if ":" not in m.group(0):
                return None  # a bare `# noqa` already suppresses everything
            return start + comment_col + m.end(), f", {code}"
    end = len(line.rstrip())
    return start + end, f"  # noqa: {code}"


def build_notebook_json(cells: Sequence[Tuple[bool, str]]) -> str:
    """An .ipynb-shaped JSON text for trainlint's Notebook: (is a Python code cell, text) per cell."""
    return json.dumps({"cells": [
        {"cell_type": "code" if code else "markdown", "source": text} for code, text in cells
    ]})


# -- the server ---------------------------------------------------------------------------------------

class TrainlintProtocol(LanguageServerProtocol):
    """pygls' protocol, answering what pygls drops silently: a request whose params do not fit its
    method gets an `InvalidParams` error (with its id), a message that is not a JSON-RPC object an
    `InvalidRequest` error."""

    def structure_message(self, data):
        try:
            return super().structure_message(data)
        except Exception as exc:
            from pygls.exceptions import JsonRpcException, JsonRpcInternalError

            if isinstance(data, dict) and "id" in data and "method" in data:
                error = exc if isinstance(exc, JsonRpcException) else JsonRpcInternalError(str(exc))
                return _BadMessage(data.get("id"), error, str(data.get("method")))
            raise

    def handle_message(self, message):
        from pygls.exceptions import JsonRpcInvalidRequest

        if isinstance(message, _BadMessage):
            if isinstance(message.id, (int, str)):
                err = message.error.to_response_error()
                err.message = f"{err.message}: bad params for {message.method}"
                self._send_response(message.id, None, err)
            return
        if not hasattr(message, "jsonrpc"):  # a JSON value that is no JSON-RPC message at all
            msg_id = message.get("id") if isinstance(message, dict) else None
            err = JsonRpcInvalidRequest("not a JSON-RPC 2.0 message").to_response_error()
            self._send_response(msg_id if isinstance(msg_id, (int, str)) else None, None, err)
            return
        return super().handle_message(message)


class _BadMessage:
    def __init__(self, msg_id, error, method: str):
        self.id = msg_id
        self.error = error
        self.method = method


class TrainlintServer(LanguageServer):
    def __init__(self, debounce_ms: int = DEFAULT_DEBOUNCE_MS, config_path: Optional[str] = None):
        super().__init__(
            "trainlint",
            __version__,
            text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
            notebook_document_sync=types.NotebookDocumentSyncOptions(
                notebook_selector=[types.NotebookDocumentFilterWithCells(
                    cells=[types.NotebookCellLanguage(language="python")], notebook="*")],
                save=True,
            ),
            protocol_cls=TrainlintProtocol,
        )
        self.debounce = max(0, debounce_ms) / 1000.0
        self.config_path = config_path
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trainlint-lint")
        self.resolver: Optional[ConfigResolver] = None
        self.config_errors_shown: set = set()
        self.snapshots: Dict[str, Snapshot] = {}  # document or notebook uri -> last lint
        self.timers: Dict[str, asyncio.TimerHandle] = {}
        self.published_cells: Dict[str, List[str]] = {}  # notebook uri -> cell uris published to
        self.generation: Dict[str, int] = {}  # uri -> number of the latest lint asked for
        self.config_stamp: Dict[str, Any] = {}  # folder -> what its config files looked like when read
        self.loop: Optional[asyncio.AbstractEventLoop] = None

    # -- plumbing ---------------------------------------------------------------------------------
    @property
    def encoding(self) -> str:
        enc = self.workspace.position_encoding if self.protocol._workspace is not None else "utf-16"
        return str(getattr(enc, "value", enc) or "utf-16")

    def report_server_error(self, error: Exception, source) -> None:
        from pygls.exceptions import (FeatureNotificationError, FeatureRequestError, JsonRpcException,
                                      JsonRpcParseError)

        if source is JsonRpcException and isinstance(error, ValueError):  # the body is not JSON
            err = JsonRpcParseError(f"parse error: {error}").to_response_error()
            self.protocol._send_response(None, None, err)
            return
        if source is FeatureRequestError:
            return  # the request was answered with the error
        if source in (FeatureNotificationError, JsonRpcException):
            # a notification we could not act on, or a malformed message without an id to answer: a
            # client's slip, worth a line in its log, not a pop-up
            logger.warning("ignored a message: %s: %s", type(error).__name__, error)
            self.window_log_message(types.LogMessageParams(
                type=types.MessageType.Warning, message=f"trainlint: ignored a message: {error!r}"))
            return
        logger.error("%s", error)
        self.window_show_message(types.ShowMessageParams(
            type=types.MessageType.Error, message=f"trainlint: internal error in the server: {error}"))

    def shutdown(self):
        # pygls waits for its thread pool, whose reader thread sits in a blocking stdin read: do not.
        if self._stop_event is not None:
            self._stop_event.set()
        if self._thread_pool:
            self._thread_pool.shutdown(wait=False, cancel_futures=True)
        self.worker.shutdown(wait=False, cancel_futures=True)

    async def in_worker(self, fn, *args):
        self.loop = asyncio.get_running_loop()
        return await self.loop.run_in_executor(self.worker, fn, *args)

    # -- configuration (worker thread) -----------------------------------------------------------
    def settings_for(self, path: str) -> Settings:
        folder = os.path.dirname(os.path.abspath(path))
        stamp = _config_stamp(folder, self.config_path)
        if self.config_stamp.get(folder, stamp) != stamp:  # edited without an event reaching us
            self.reload_config()
        self.config_stamp[folder] = stamp
        if self.resolver is None:
            try:
                self.resolver = ConfigResolver(self.config_path)
            except ConfigError as exc:
                self.config_error(str(exc))
                self.resolver = ConfigResolver()
        try:
            return self.resolver.for_path(path)
        except ConfigError as exc:
            self.config_error(str(exc))
            return Settings(root=os.path.dirname(os.path.abspath(path)))

    def config_error(self, message: str) -> None:
        """Worker thread: show a configuration error once (until the configuration changes)."""
        if message in self.config_errors_shown:
            return
        self.config_errors_shown.add(message)
        params = types.ShowMessageParams(
            type=types.MessageType.Error,
            message=f"trainlint: configuration error: {message} (linting with the default settings until it is fixed)")
        if self.loop is not None:  # written by the event loop's thread, never interleaved with its messages
            self.loop.call_soon_threadsafe(self.window_show_message, params)
        else:
            self.window_show_message(params)

    def reload_config(self) -> None:
        self.resolver = None
        self.config_errors_shown.clear()
        self.config_stamp.clear()

    def is_excluded(self, path: str) -> bool:
        from trainlint.files import is_excluded

        try:
            return is_excluded(path, self.resolver) if self.resolver is not None else False
        except ConfigError:
            return False

    # -- documents ---------------------------------------------------------------------------------
    def doc_path(self, uri: str, suffix: str = ".py") -> str:
        path = to_fs_path(uri) if uri.startswith("file:") else None
        if path:
            return path
        base = self.workspace.root_path if self.protocol._workspace is not None else None
        name = re.sub(r"[^\w.-]", "_", uri.rsplit("/", 1)[-1]) or "untitled"
        if not name.endswith((".py", ".pyi", ".ipynb")):
            name += suffix
        return os.path.join(base or os.getcwd(), name)

    def is_python(self, uri: str, language_id: Optional[str]) -> bool:
        if language_id:
            return language_id == "python"
        return uri.endswith(PYTHON_SUFFIXES)

    def client_uri(self, key: str) -> str:
        """The URI as the client spells it (documents are kept under their unquoted URI; diagnostics and
        edits must name the document exactly as the client does)."""
        nb = self.workspace.get_notebook_document(notebook_uri=key)
        if nb is not None:
            return nb.uri
        doc = self.workspace.text_documents.get(_unquote(key))
        return doc.uri if doc is not None else key

    def text_state(self, uri: str):
        """(version, text, path) of an open text document, read on the event loop."""
        doc = self.workspace.text_documents.get(_unquote(uri))
        if doc is None:
            return None
        return doc.version, doc.source, self.doc_path(uri)

    def notebook_state(self, uri: str):
        nb = self.workspace.get_notebook_document(notebook_uri=uri)
        if nb is None:
            return None
        cells = []
        for cell in nb.cells:
            doc = self.workspace.text_documents.get(_unquote(cell.document))
            text = doc.source if doc is not None else ""
            code = cell.kind == types.NotebookCellKind.Code and (
                doc is None or (doc.language_id or "python") == "python")
            cells.append((cell.document, code, text))
        return nb.version, cells, self.doc_path(uri, ".ipynb")

    def lint_script(self, uri: str, version, text: str, path: str) -> Snapshot:
        """Worker thread: lint one Python document."""
        settings = self.settings_for(path)
        snap = Snapshot(uri, version, path, text, codes=settings.codes_for(path),
                        options=settings.rule_options(), unsafe=bool(settings.unsafe_fixes))
        if self.is_excluded(path):
            snap.excluded = True
            return snap
        self.check_deps(uri)
        result = safe_lint(text, path, snap.codes, snap.options)
        snap.diagnostics = snap.raw = result.diagnostics
        snap.deps = dict(result.deps)
        return snap

    def lint_notebook(self, uri: str, version, cells, path: str) -> Snapshot:
        """Worker thread: lint a notebook document (its code cells joined, as the CLI does)."""
        from trainlint.notebook import Notebook
        from trainlint.source import SourceError

        settings = self.settings_for(path)
        snap = Snapshot(uri, version, path, "", codes=settings.codes_for(path), options=settings.rule_options(),
                        unsafe=bool(settings.unsafe_fixes), cells=[(c[0], c[2]) for c in cells])
        if self.is_excluded(path):
            snap.excluded = True
            return snap
        try:
            nb = Notebook(build_notebook_json([(c[1], c[2]) for c in cells]))
        except SourceError as exc:
            snap.diagnostics = [file_error(path, exc.message)]
            return snap
        snap.notebook = nb
        snap.text = nb.text
        self.check_deps(uri)
        result = safe_lint(nb.text, path, snap.codes, snap.options)
        snap.raw = result.diagnostics
        mapped = []
        for d in result.diagnostics:
            try:
                mapped.append(nb.map_diagnostic(d))
            except Exception:  # pragma: no cover
                mapped.append(d)
        snap.diagnostics = mapped
        snap.deps = dict(result.deps)
        return snap

    def check_deps(self, uri: str) -> None:
        """Worker thread: forget project facts read from a module that changed on disk since the last lint
        of `uri` (a change no event told us about: a `git checkout`, another editor)."""
        prev = self.snapshots.get(_unquote(uri))
        for dep in list(prev.deps) if prev is not None else []:
            _forget_module(dep)

    async def fresh_snapshot(self, uri: str) -> Optional[Snapshot]:
        """The lint of the document (or notebook) as it is now; linted here if the last one is stale."""
        nb_uri = self.notebook_of(uri)
        if nb_uri is not None:
            state = self.notebook_state(nb_uri)
            if state is None:
                return None
            snap = self.snapshots.get(nb_uri)
            if snap is None or snap.version != state[0] or [c[0] for c in state[1]] != [c[0] for c in snap.cells] \
                    or [c[2] for c in state[1]] != [c[1] for c in snap.cells]:
                snap = await self.in_worker(self.lint_notebook, self.client_uri(nb_uri), *state)
            return snap
        state = self.text_state(uri)
        if state is None:
            return None
        snap = self.snapshots.get(_unquote(uri))
        if snap is None or snap.version != state[0] or snap.text != state[1]:
            snap = await self.in_worker(self.lint_script, self.client_uri(uri), *state)
        return snap

    def notebook_of(self, uri: str) -> Optional[str]:
        if self.protocol._workspace is None:
            return None
        if self.workspace.get_notebook_document(notebook_uri=uri) is not None:
            return _unquote(uri)
        nb = self.workspace.get_notebook_document(cell_uri=uri)
        return _unquote(nb.uri) if nb is not None else None

    # -- scheduling --------------------------------------------------------------------------------
    def schedule(self, uri: str, delay: float = 0.0) -> None:
        """Lint `uri` (a text document or a notebook) after `delay` seconds; a newer call replaces an
        older one that has not started yet (the debounce)."""
        uri = _unquote(uri)
        old = self.timers.pop(uri, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()

        def fire():
            self.timers.pop(uri, None)
            task = loop.create_task(self.lint_and_publish(uri))
            task.add_done_callback(_log_task_error)

        self.timers[uri] = loop.call_later(delay, fire)

    async def lint_and_publish(self, uri: str) -> None:
        gen = self.generation[uri] = self.generation.get(uri, 0) + 1

        def current() -> bool:  # a newer lint of this document was asked for: this one is moot
            return self.generation.get(uri) == gen

        if self.workspace.get_notebook_document(notebook_uri=uri) is not None:
            state = self.notebook_state(uri)
            if state is None:
                return
            snap = await self.in_worker(self.unless_moot, current, self.lint_notebook, self.client_uri(uri), *state)
            now = self.notebook_state(uri)
            if snap is None or now is None or now[0] != snap.version:
                return  # changed meanwhile: the lint already scheduled publishes
            self.snapshots[uri] = snap
            self.publish_notebook(snap)
            return
        state = self.text_state(uri)
        if state is None:
            return
        snap = await self.in_worker(self.unless_moot, current, self.lint_script, self.client_uri(uri), *state)
        now = self.text_state(uri)
        if snap is None or now is None or now[0] != snap.version or now[1] != snap.text:
            return
        self.snapshots[uri] = snap
        self.publish_script(snap)

    def unless_moot(self, current, fn, *args):
        """Worker thread: run a scheduled lint unless a newer one for the same document is queued."""
        return fn(*args) if current() else None

    # -- publishing --------------------------------------------------------------------------------
    def to_lsp(self, d: Diagnostic, lines: Lines) -> types.Diagnostic:
        enc = self.encoding
        sl, sc = lines.client(d.location.row, d.location.column, enc)
        el, ec = lines.client(d.end_location.row, d.end_location.column, enc)
        if (el, ec) < (sl, sc):
            el, ec = sl, sc
        if (el, ec) == (sl, sc):  # a point (TL000 at a syntax error): underline up to the line's end
            ec = _units(lines.line(sl), enc)
            if ec <= sc:
                sc = max(0, sc - 1)
        known = d.code in CODES
        return types.Diagnostic(
            range=types.Range(types.Position(sl, sc), types.Position(el, ec)),
            message=d.message,
            severity=types.DiagnosticSeverity.Warning if d.severity == "warning" else types.DiagnosticSeverity.Error,
            code=d.code,
            code_description=types.CodeDescription(href=rule_url(d.code)) if known else None,
            source=SOURCE,
        )

    def publish_script(self, snap: Snapshot) -> None:
        lines = Lines(snap.text)
        self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(
            uri=snap.uri, version=snap.version, diagnostics=[self.to_lsp(d, lines) for d in snap.diagnostics]))

    def publish_notebook(self, snap: Snapshot) -> None:
        per_cell: Dict[str, List[types.Diagnostic]] = {uri: [] for uri, _ in snap.cells}
        for d in snap.diagnostics:
            if d.cell is None or not 1 <= d.cell <= len(snap.cells):
                if not snap.cells:
                    continue
                uri, text = snap.cells[0]  # a notebook-wide error (bad structure): on the first cell
            else:
                uri, text = snap.cells[d.cell - 1]
            per_cell[uri].append(self.to_lsp(d, Lines(text)))
        gone = [u for u in self.published_cells.get(_unquote(snap.uri), []) if u not in per_cell]
        for uri in gone:  # cells deleted since the last publish
            self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=uri, diagnostics=[]))
        for uri, diags in per_cell.items():
            doc = self.workspace.text_documents.get(_unquote(uri))
            self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(
                uri=uri, version=doc.version if doc is not None else None, diagnostics=diags))
        self.published_cells[_unquote(snap.uri)] = list(per_cell)

    def clear(self, uri: str) -> None:
        uri = _unquote(uri)
        t = self.timers.pop(uri, None)
        if t is not None:
            t.cancel()
        self.snapshots.pop(uri, None)
        for cell in self.published_cells.pop(uri, []):
            self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=cell, diagnostics=[]))

    # -- files changing on disk -------------------------------------------------------------------
    def file_changed(self, path: str, structural: bool = False) -> None:
        """A file changed on disk (saved, or a watched-file event): reload the configuration if it is
        one, or drop the project facts read from it and re-lint the open documents that used it."""
        path = os.path.abspath(path)
        name = os.path.basename(path)
        if name in CONFIG_FILES:
            self.worker.submit(self.reload_config)
            self.relint_all()
            return
        if not name.endswith(PYTHON_SUFFIXES):
            return
        self.worker.submit(_forget_module, path, structural)
        if structural:  # an import that did not resolve may now (or the reverse)
            self.relint_all()
            return
        for uri, snap in list(self.snapshots.items()):
            if path in snap.deps:
                self.schedule(uri)

    def relint_all(self) -> None:
        for uri in list(self.workspace.text_documents):
            if self.notebook_of(uri) is None and uri in self.snapshots:
                self.schedule(uri)
        for uri in list(self.workspace.notebook_documents):
            self.schedule(uri)

    # -- code actions -------------------------------------------------------------------------------
    async def code_actions(self, params: types.CodeActionParams) -> List[types.CodeAction]:
        uri = _unquote(params.text_document.uri)
        snap = await self.fresh_snapshot(uri)
        if snap is None or snap.excluded:
            return []
        only = list(params.context.only or []) if params.context is not None else []

        def wanted(kind: str) -> bool:
            return not only or any(kind == k or kind.startswith(str(k) + ".") for k in only)

        actions: List[types.CodeAction] = []
        nb_uri = self.notebook_of(uri)
        if nb_uri is not None:
            cell_index = next((i for i, (u, _) in enumerate(snap.cells) if _unquote(u) == uri), None)
            if cell_index is None:
                return []
            cell_text = snap.cells[cell_index][1]
            pairs = [(m, r) for m, r in zip(snap.diagnostics, snap.raw) if m.cell == cell_index + 1]
        else:
            cell_text = snap.text
            pairs = list(zip(snap.diagnostics, snap.raw))
        lines = Lines(cell_text)
        enc = self.encoding
        first = params.range.start.line + 1
        last = params.range.end.line + 1
        here = [(m, r) for m, r in pairs if m.location.row <= last and m.end_location.row >= first]
        position = {id(r): i for i, r in enumerate(snap.raw)}
        lsp_diags = {id(m): self.to_lsp(m, lines) for m, _ in here}

        for m, r in here:
            if m.fix is None or m.code == "TL000":
                continue
            safe = m.fix.applicability == Applicability.SAFE
            kind = types.CodeActionKind.QuickFix if safe else UNSAFE_KIND
            if not wanted(kind):
                continue
            key = position[id(r)]
            if key not in snap.fix_edits:  # asked again on every cursor move: computed once per lint
                snap.fix_edits[key] = await self.in_worker(self.fix_edit, snap, r.fix)
            edit = snap.fix_edits[key]
            if edit is None:
                continue
            title = f"{m.code}: {m.fix.message}" if safe else f"{m.code}: {m.fix.message} (unsafe fix: check the result)"
            actions.append(types.CodeAction(title=title, kind=kind, diagnostics=[lsp_diags[id(m)]],
                                            edit=edit, is_preferred=safe or None))
        if wanted(types.CodeActionKind.QuickFix):
            done = set()
            for m, _ in here:
                if m.code == "TL000" or (m.location.row, m.code) in done:
                    continue
                done.add((m.location.row, m.code))
                ins = noqa_insertion(cell_text, m.location.row, m.code)
                if ins is None:
                    continue
                line, ch = lines.position(ins[0], enc)
                pos = types.Position(line, ch)
                edit = types.WorkspaceEdit(changes={params.text_document.uri: [
                    types.TextEdit(types.Range(pos, pos), ins[1])]})
                actions.append(types.CodeAction(title=f"Suppress {m.code} on this line with `# noqa: {m.code}`",
                                                kind=types.CodeActionKind.QuickFix,
                                                diagnostics=[lsp_diags[id(m)]], edit=edit))
        if only and any(FIX_ALL_KIND == k or FIX_ALL_KIND.startswith(str(k) + ".") for k in only):
            edit = await self.in_worker(self.fix_all_edit, snap)
            if edit is not None:
                actions.append(types.CodeAction(
                    title="trainlint: fix all safe fixes" + (" (and unsafe: unsafe-fixes = true)" if snap.unsafe else ""),
                    kind=FIX_ALL_KIND, edit=edit))
        elif not only and any(m.fix is not None and (snap.unsafe or m.fix.applicability == Applicability.SAFE)
                              for m, _ in pairs):
            # Listed in the light-bulb menu too, as a command: the fixes are computed only when it is
            # chosen, so that the menu stays cheap.
            actions.append(types.CodeAction(
                title="trainlint: fix all safe fixes in this file", kind=FIX_ALL_KIND,
                command=types.Command(title="trainlint: fix all", command=FIX_ALL_COMMAND,
                                      arguments=[snap.uri])))
        return actions

    def _edit_for(self, snap: Snapshot, new_text: str) -> Optional[types.WorkspaceEdit]:
        """Worker thread: the WorkspaceEdit turning the snapshot's text into `new_text` (for a notebook,
        the joined code; one edit per changed cell)."""
        enc = self.encoding
        if snap.notebook is None:
            e = minimal_edit(snap.text, new_text)
            if e is None:
                return None
            lines = Lines(snap.text)
            a, b = lines.position(e[0], enc), lines.position(e[1], enc)
            return types.WorkspaceEdit(changes={snap.uri: [types.TextEdit(
                types.Range(types.Position(*a), types.Position(*b)), e[2])]})
        texts = snap.notebook.cell_texts(new_text)
        if texts is None:
            return None
        live = [c for c in snap.notebook.cells if not c.skipped]
        changes: Dict[str, List[types.TextEdit]] = {}
        for cell, text in zip(live, texts):
            uri, old = snap.cells[cell.number - 1]
            e = minimal_edit(old, text)
            if e is None:
                continue
            lines = Lines(old)
            a, b = lines.position(e[0], enc), lines.position(e[1], enc)
            changes[uri] = [types.TextEdit(types.Range(types.Position(*a), types.Position(*b)), e[2])]
        return types.WorkspaceEdit(changes=changes) if changes else None

    def fix_edit(self, snap: Snapshot, fix: Fix) -> Optional[types.WorkspaceEdit]:
        new_text = apply_one_fix(snap.text, fix)
        return self._edit_for(snap, new_text) if new_text is not None else None

    def fix_all_edit(self, snap: Snapshot) -> Optional[types.WorkspaceEdit]:
        if not snap.text:
            return None
        new_text = safe_fix(snap.text, snap.path, snap.codes, snap.options, snap.unsafe)
        return self._edit_for(snap, new_text)


def _unquote(uri: str) -> str:
    from urllib.parse import unquote

    return unquote(uri)


def _forget_module(path: str, structural: bool = False) -> None:
    """Drop the memoised facts of the projects that read `path` (see `Project.forget`)."""
    from trainlint.analysis.project import Project

    Project.forget(path, structural)


def _config_stamp(folder: str, override: Optional[str]):
    """The modification times of the configuration files that can apply to files of `folder` (cheap:
    a few stat calls), to notice a changed configuration even without a watched-file event."""
    paths = [override] if override else []
    d = folder
    while not override:
        paths.extend(os.path.join(d, name) for name in CONFIG_FILES)
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((p, st.st_mtime_ns, st.st_size))
        except OSError:
            pass
    return tuple(out)


def _log_task_error(task: "asyncio.Task") -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("lint task failed", exc_info=task.exception())


# Collections of the youngest generation: a lint allocates some 50,000 container objects (LibCST nodes,
# facts); with Python's default threshold (700) that is about 65 collections per keystroke.
GC_GEN0_THRESHOLD = 10_000


def tune_gc() -> None:
    """Keep Python's cyclic garbage collector off the keystroke path (with Python's defaults it costs the
    benchmark's edits about 15 ms of CPU each, and its full collections make the slow edits: p90 about
    twice the median; `benchmarks/lsp_latency.py`):

    - the linter's modules are imported now, and everything alive then (modules, classes, pygls' and
      lsprotocol's types: about 66,000 objects that live as long as the server) is moved to the permanent
      generation (`gc.freeze`), so that older-generation collections during a lint no longer traverse it;
    - the youngest generation is collected every GC_GEN0_THRESHOLD allocations instead of 700.

    Garbage is still collected: a lint's tree is held by reference cycles (the facts memoised on its
    ModuleIndex refer back to the index), so the cyclic collector is what frees it, and it still runs a
    few times per lint; the server's peak memory on the benchmark is 85 MiB instead of 71 MiB. A failing
    import here is left for the first lint, which reports it as TL000."""
    import gc

    try:
        from trainlint import engine, fixer, positions, rules  # noqa: F401  (imported for the freeze)
        from trainlint.codes import CODES as _codes

        rules.load([c for c in _codes if c in rules.RULE_MODULES])
    except Exception:  # pragma: no cover - a broken rule module: the lint that loads it says so
        logger.exception("could not import the linter's modules at start")
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def create_server(debounce_ms: int = DEFAULT_DEBOUNCE_MS, config_path: Optional[str] = None) -> TrainlintServer:
    server = TrainlintServer(debounce_ms, config_path)

    @server.feature(types.INITIALIZED)
    def initialized(ls: TrainlintServer, params: types.InitializedParams) -> None:
        caps = ls.client_capabilities.workspace
        watched = getattr(caps, "did_change_watched_files", None) if caps is not None else None
        if watched is not None and watched.dynamic_registration:
            watchers = [types.FileSystemWatcher(glob_pattern=f"**/{name}") for name in CONFIG_FILES]
            watchers.append(types.FileSystemWatcher(glob_pattern="**/*.py"))
            ls.client_register_capability(types.RegistrationParams(registrations=[types.Registration(
                id="trainlint-watched-files", method=types.WORKSPACE_DID_CHANGE_WATCHED_FILES,
                register_options=types.DidChangeWatchedFilesRegistrationOptions(watchers=watchers))]))

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: TrainlintServer, params: types.DidOpenTextDocumentParams) -> None:
        doc = params.text_document
        if ls.notebook_of(doc.uri) is not None:
            return
        if os.path.basename(doc.uri) in CONFIG_FILES:
            return
        if ls.is_python(doc.uri, doc.language_id):
            ls.schedule(doc.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: TrainlintServer, params: types.DidChangeTextDocumentParams) -> None:
        uri = params.text_document.uri
        doc = ls.workspace.text_documents.get(_unquote(uri))
        if doc is not None and ls.notebook_of(uri) is None and ls.is_python(uri, doc.language_id):
            ls.schedule(uri, ls.debounce)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE, types.TextDocumentSaveRegistrationOptions(include_text=False))
    def did_save(ls: TrainlintServer, params: types.DidSaveTextDocumentParams) -> None:
        uri = params.text_document.uri
        if uri.startswith("file:"):
            ls.file_changed(to_fs_path(uri))
        doc = ls.workspace.text_documents.get(_unquote(uri))
        if doc is not None and ls.is_python(uri, doc.language_id) and ls.notebook_of(uri) is None:
            ls.schedule(uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: TrainlintServer, params: types.DidCloseTextDocumentParams) -> None:
        uri = params.text_document.uri
        ls.clear(uri)
        ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=uri, diagnostics=[]))

    @server.feature(types.NOTEBOOK_DOCUMENT_DID_OPEN)
    def nb_open(ls: TrainlintServer, params: types.DidOpenNotebookDocumentParams) -> None:
        ls.schedule(params.notebook_document.uri)

    @server.feature(types.NOTEBOOK_DOCUMENT_DID_CHANGE)
    def nb_change(ls: TrainlintServer, params: types.DidChangeNotebookDocumentParams) -> None:
        ls.schedule(params.notebook_document.uri, ls.debounce)

    @server.feature(types.NOTEBOOK_DOCUMENT_DID_SAVE)
    def nb_save(ls: TrainlintServer, params: types.DidSaveNotebookDocumentParams) -> None:
        ls.schedule(params.notebook_document.uri)

    @server.feature(types.NOTEBOOK_DOCUMENT_DID_CLOSE)
    def nb_close(ls: TrainlintServer, params: types.DidCloseNotebookDocumentParams) -> None:
        ls.clear(params.notebook_document.uri)
        for cell in params.cell_text_documents:
            ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=cell.uri, diagnostics=[]))

    @server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    def watched(ls: TrainlintServer, params: types.DidChangeWatchedFilesParams) -> None:
        for change in params.changes:
            if change.uri.startswith("file:"):
                ls.file_changed(to_fs_path(change.uri), change.type != types.FileChangeType.Changed)

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def changed_configuration(ls: TrainlintServer, params: types.DidChangeConfigurationParams) -> None:
        ls.worker.submit(ls.reload_config)
        ls.relint_all()

    @server.feature(types.TEXT_DOCUMENT_CODE_ACTION, types.CodeActionOptions(
        code_action_kinds=[types.CodeActionKind.QuickFix, UNSAFE_KIND, FIX_ALL_KIND], resolve_provider=False))
    async def code_action(ls: TrainlintServer, params: types.CodeActionParams):
        return await ls.code_actions(params)

    @server.command(FIX_ALL_COMMAND)
    async def apply_fix_all(ls: TrainlintServer, *args):
        uri = args[0] if args else None
        if isinstance(uri, dict):
            uri = uri.get("uri")
        if not isinstance(uri, str):
            from pygls.exceptions import JsonRpcInvalidParams

            raise JsonRpcInvalidParams(f"{FIX_ALL_COMMAND} takes the document's URI")
        snap = await ls.fresh_snapshot(_unquote(uri))
        if snap is None or snap.excluded:
            return None
        edit = await ls.in_worker(ls.fix_all_edit, snap)
        if edit is not None:
            await ls.workspace_apply_edit_async(types.ApplyWorkspaceEditParams(edit=edit, label="trainlint: fix all"))
        return None

    return server


def serve(debounce_ms: int = DEFAULT_DEBOUNCE_MS, config_path: Optional[str] = None,
          log_file: Optional[str] = None, verbose: bool = False) -> int:
    """Run the server on stdin/stdout until the client says `exit` (or closes stdin)."""
    handler: logging.Handler
    if log_file:
        handler = logging.FileHandler(log_file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    if not verbose:  # pygls logs a traceback for every malformed message it is sent: keep the log readable
        logging.getLogger("pygls").setLevel(logging.CRITICAL)

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # whatever prints by mistake must not corrupt the JSON-RPC stream
    server = create_server(debounce_ms, config_path)
    tune_gc()
    try:
        server.start_io(stdin, stdout)
    finally:
        code = 0 if server.protocol._shutdown else 1
        try:
            sys.stderr.flush()
        except Exception:  # pragma: no cover
            pass
    # The reader thread may still block on stdin; do not wait for it (nor for atexit joins).
    os._exit(code)
