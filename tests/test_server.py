"""`trainlint server`: the real server as a subprocess, spoken to over stdio with JSON-RPC.

Every wait has a generous timeout (a loaded 2-core machine) and nothing is timed: the benchmark
(benchmarks/lsp_latency.py) measures latency.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time

import pytest

try:
    import pygls  # noqa: F401
    HAVE_PYGLS = True
except ImportError:  # pragma: no cover - `pip install -e ".[dev]"` installs it
    HAVE_PYGLS = False

needs_pygls = pytest.mark.skipif(not HAVE_PYGLS, reason="pygls is not installed (pip install \"trainlint[lsp]\")")


def from_fs_path(path: str) -> str:
    from pygls.uris import from_fs_path as convert

    return convert(path)


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(REPO, "examples", "train.py")
WAIT = 20.0


class Client:
    """A minimal LSP client: framing, a reader thread, requests, and answers to the server's requests."""

    def __init__(self, cwd: str, *args: str, prelude: str = ""):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # `prelude`: Python run in the server's process before the command line (to break a rule on purpose)
        code = f"import sys\n{prelude}\nfrom trainlint.cli import main\nsys.argv[0] = 'trainlint'\nmain()"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, "server", *(args or ("--debounce", "20"))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, env=env)
        self.messages: "queue.Queue[dict]" = queue.Queue()
        self.seen: list = []  # every message read so far
        self.next_id = 0
        self.applied_edits: list = []
        self.stderr_lines: list = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _drain_stderr(self):
        for line in self.proc.stderr:
            self.stderr_lines.append(line.decode("utf-8", "replace"))

    def _read(self):
        out = self.proc.stdout
        while True:
            length = None
            while True:
                line = out.readline()
                if not line:
                    return
                line = line.strip()
                if not line:
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = out.read(length)
            msg = json.loads(body)
            if "method" in msg and "id" in msg:  # a request from the server: answer it
                if msg["method"] == "workspace/applyEdit":
                    self.applied_edits.append(msg["params"])
                    answer = {"applied": True}
                else:
                    answer = None
                try:
                    self.send_raw({"jsonrpc": "2.0", "id": msg["id"], "result": answer})
                except (OSError, ValueError):  # the test has closed the pipe already
                    pass
            self.messages.put(msg)

    def send_raw(self, obj) -> None:
        body = obj if isinstance(obj, bytes) else json.dumps(obj).encode("utf-8")
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def notify(self, method: str, params) -> None:
        self.send_raw({"jsonrpc": "2.0", "method": method, "params": params})

    def send_request(self, method: str, params) -> int:
        self.next_id += 1
        self.send_raw({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        return self.next_id

    def wait_for(self, pred, timeout: float = WAIT, what: str = "a message"):
        for msg in self.seen:
            if pred(msg):
                self.seen.remove(msg)
                return msg
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}; stderr:\n{''.join(self.stderr_lines)[-3000:]}")
            try:
                msg = self.messages.get(timeout=left)
            except queue.Empty:
                continue
            if pred(msg):
                return msg
            self.seen.append(msg)

    def request(self, method: str, params):
        msg_id = self.send_request(method, params)
        return self.wait_for(lambda m: m.get("id") == msg_id and "method" not in m, what=f"the answer to {method}")

    def diagnostics(self, uri: str, version=None):
        """The next publishDiagnostics for `uri` (for `version`, when given)."""
        return self.wait_for(
            lambda m: m.get("method") == "textDocument/publishDiagnostics" and m["params"]["uri"] == uri
            and (version is None or m["params"].get("version") == version),
            what=f"diagnostics for {uri} (version {version})")["params"]["diagnostics"]

    def initialize(self, root: str, **caps):
        capabilities = {
            "workspace": {"didChangeWatchedFiles": {"dynamicRegistration": True}, "applyEdit": True},
            "textDocument": {"codeAction": {"codeActionLiteralSupport": {"codeActionKind": {"valueSet": [
                "quickfix", "source", "source.fixAll"]}}}},
        }
        capabilities.update(caps)
        r = self.request("initialize", {"processId": os.getpid(), "rootUri": from_fs_path(root),
                                        "capabilities": capabilities})
        self.notify("initialized", {})
        return r["result"]

    def close(self) -> int:
        try:
            r = self.request("shutdown", None)
            assert "error" not in r, r
            self.notify("exit", None)
            return self.proc.wait(timeout=WAIT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


def apply_edits(text: str, edits) -> str:
    """Apply LSP TextEdits (UTF-16 positions; ASCII here) to a text, last first."""
    lines = text.split("\n")
    starts = [0]
    for line in lines[:-1]:
        starts.append(starts[-1] + len(line) + 1)

    def off(pos):
        return starts[pos["line"]] + pos["character"] if pos["line"] < len(starts) else len(text)

    for e in sorted(edits, key=lambda e: (e["range"]["start"]["line"], e["range"]["start"]["character"]), reverse=True):
        text = text[: off(e["range"]["start"])] + e["newText"] + text[off(e["range"]["end"]):]
    return text


@pytest.fixture
def project(tmp_path):
    tmp_path = tmp_path / "my project"  # a space: URIs are quoted, and must come back as the client sent them
    tmp_path.mkdir()
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "demo"\n\n[tool.trainlint]\nignore = ["TL002"]\n')
    shutil.copy(EXAMPLE, tmp_path / "train.py")
    return tmp_path


def _codes(diags):
    return sorted(d["code"] for d in diags)


@needs_pygls
def test_script_diagnostics_code_actions_and_change(project):
    path = str(project / "train.py")
    uri = from_fs_path(path)
    text = (project / "train.py").read_text()
    client = Client(str(project))
    try:
        result = client.initialize(str(project))
        caps = result["capabilities"]
        assert caps["codeActionProvider"]
        assert "source.fixAll.trainlint" in caps["codeActionProvider"]["codeActionKinds"]
        assert result["serverInfo"]["name"] == "trainlint"
        # the server asks to watch the configuration files and the project's modules
        client.wait_for(lambda m: m.get("method") == "client/registerCapability", what="registerCapability")

        client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": text}})
        diags = client.diagnostics(uri, 1)
        # what `trainlint train.py` finds, less TL002 (ignored by the project's configuration)
        assert _codes(diags) == ["TL001", "TL003", "TL004", "TL005"]
        tl005 = next(d for d in diags if d["code"] == "TL005")
        assert tl005["source"] == "trainlint" and tl005["severity"] == 1
        assert tl005["codeDescription"]["href"].endswith("rules/TL005-optimizer-eps-underflow.md")
        line37 = text.split("\n")[36]
        assert tl005["range"]["start"] == {"line": 36, "character": line37.index("torch.optim.Adam")}

        # code actions on TL005's line: its safe fix (preferred quickfix) and the noqa suppression
        r = client.request("textDocument/codeAction", {"textDocument": {"uri": uri}, "range": tl005["range"],
                                                       "context": {"diagnostics": [tl005]}})
        actions = r["result"]
        fix = next(a for a in actions if a["title"].startswith("TL005:"))
        assert fix["kind"] == "quickfix" and fix["isPreferred"] is True
        fixed = apply_edits(text, fix["edit"]["changes"][uri])
        assert "eps=1e-4" in fixed.split("\n")[36] or "eps=" in fixed.split("\n")[36]
        noqa = next(a for a in actions if "noqa" in a["title"] and "TL005" in a["title"])
        suppressed = apply_edits(text, noqa["edit"]["changes"][uri])
        assert suppressed.split("\n")[36].endswith("  # noqa: TL005")

        # an unsafe fix is offered under its own kind, labelled
        tl001 = next(d for d in diags if d["code"] == "TL001")
        r = client.request("textDocument/codeAction", {"textDocument": {"uri": uri}, "range": tl001["range"],
                                                       "context": {"diagnostics": [tl001]}})
        unsafe = next(a for a in r["result"] if a["title"].startswith("TL001:"))
        assert unsafe["kind"] == "quickfix.unsafe.trainlint" and "unsafe" in unsafe["title"]
        assert not unsafe.get("isPreferred")

        # source.fixAll.trainlint: every safe fix (only TL005's here), nothing unsafe
        r = client.request("textDocument/codeAction", {
            "textDocument": {"uri": uri}, "range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 0}},
            "context": {"diagnostics": [], "only": ["source.fixAll"]}})
        (fix_all,) = r["result"]
        assert fix_all["kind"] == "source.fixAll.trainlint"
        all_fixed = apply_edits(text, fix_all["edit"]["changes"][uri])
        assert all_fixed == fixed

        # didChange (incremental) with the suppression: TL005 disappears, the rest stays
        edit = noqa["edit"]["changes"][uri][0]
        client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 2},
                                                 "contentChanges": [{"range": edit["range"], "text": edit["newText"]}]})
        assert _codes(client.diagnostics(uri, 2)) == ["TL001", "TL003", "TL004"]

        # the command applies all safe fixes through workspace/applyEdit
        client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 3},
                                                 "contentChanges": [{"text": text}]})
        assert _codes(client.diagnostics(uri, 3)) == ["TL001", "TL003", "TL004", "TL005"]
        r = client.request("workspace/executeCommand", {"command": "trainlint.applyFixAll", "arguments": [uri]})
        assert "error" not in r, r
        (applied,) = client.applied_edits
        assert apply_edits(text, applied["edit"]["changes"][uri]) == fixed

        # saving: linted again, same findings
        client.notify("textDocument/didSave", {"textDocument": {"uri": uri}})
        assert _codes(client.diagnostics(uri, 3)) == ["TL001", "TL003", "TL004", "TL005"]
        client.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
        assert client.diagnostics(uri) == []
        assert client.close() == 0
    finally:
        if client.proc.poll() is None:
            client.proc.kill()


NOTEBOOK_CELLS = [
    ("markdown", "# Training\n"),
    ("python", "import torch\nmodel = torch.nn.Linear(4, 2).half()\n"),
    ("python", "%matplotlib inline\noptimizer = torch.optim.Adam(model.parameters(), lr=1e-3)\n"),
]


def _notebook_open(uri, cells):
    cell_uris = [f"{uri}#cell{i}" for i in range(len(cells))]
    return cell_uris, {
        "notebookDocument": {
            "uri": uri, "notebookType": "jupyter-notebook", "version": 1,
            "cells": [{"kind": 1 if lang == "markdown" else 2, "document": cu}
                      for cu, (lang, _) in zip(cell_uris, cells)],
        },
        "cellTextDocuments": [{"uri": cu, "languageId": lang, "version": 1, "text": text}
                              for cu, (lang, text) in zip(cell_uris, cells)],
    }


@needs_pygls
def test_notebook_diagnostics_per_cell_and_fixes(tmp_path):
    tmp_path = tmp_path / "note books"
    tmp_path.mkdir()
    nb_path = str(tmp_path / "train.ipynb")
    uri = from_fs_path(nb_path)
    client = Client(str(tmp_path))
    try:
        result = client.initialize(str(tmp_path), notebookDocument={"synchronization": {}})
        sync = result["capabilities"]["notebookDocumentSync"]
        assert sync["notebookSelector"][0]["cells"] == [{"language": "python"}]
        cell_uris, params = _notebook_open(uri, NOTEBOOK_CELLS)
        client.notify("notebookDocument/didOpen", params)
        # one diagnostic set per cell; TL005 in the third cell, on its own row (the magic is kept)
        sets = {cu: client.diagnostics(cu) for cu in cell_uris}
        assert sets[cell_uris[0]] == [] and sets[cell_uris[1]] == []
        (d,) = sets[cell_uris[2]]
        assert d["code"] == "TL005" and d["range"]["start"]["line"] == 1
        text = NOTEBOOK_CELLS[2][1]
        r = client.request("textDocument/codeAction", {"textDocument": {"uri": cell_uris[2]}, "range": d["range"],
                                                       "context": {"diagnostics": [d]}})
        fix = next(a for a in r["result"] if a["title"].startswith("TL005:"))
        assert list(fix["edit"]["changes"]) == [cell_uris[2]]
        fixed = apply_edits(text, fix["edit"]["changes"][cell_uris[2]])
        assert fixed.startswith("%matplotlib inline\n") and "eps=" in fixed
        noqa = next(a for a in r["result"] if "noqa" in a["title"])
        assert apply_edits(text, noqa["edit"]["changes"][cell_uris[2]]).split("\n")[1].endswith("# noqa: TL005")

        # a change in a cell: the fixed text gives no finding
        client.notify("notebookDocument/didChange", {
            "notebookDocument": {"uri": uri, "version": 2},
            "change": {"cells": {"textContent": [{"document": {"uri": cell_uris[2], "version": 2},
                                                  "changes": [{"text": fixed}]}]}}})
        assert client.diagnostics(cell_uris[2], 2) == []

        # a cell added at the end (with a finding), then deleted again
        new_cell = f"{uri}#cell3"
        client.notify("notebookDocument/didChange", {
            "notebookDocument": {"uri": uri, "version": 3},
            "change": {"cells": {"structure": {
                "array": {"start": 3, "deleteCount": 0, "cells": [{"kind": 2, "document": new_cell}]},
                "didOpen": [{"uri": new_cell, "languageId": "python", "version": 1,
                             "text": "opt2 = torch.optim.AdamW(model.parameters())\n"}]}}}})
        (d,) = client.diagnostics(new_cell)
        assert d["code"] == "TL005" and d["range"]["start"]["line"] == 0
        client.notify("notebookDocument/didChange", {
            "notebookDocument": {"uri": uri, "version": 4},
            "change": {"cells": {"structure": {"array": {"start": 3, "deleteCount": 1},
                                               "didClose": [{"uri": new_cell}]}}}})
        assert client.diagnostics(new_cell) == []  # the deleted cell's finding is cleared
        client.notify("notebookDocument/didClose", {"notebookDocument": {"uri": uri},
                                                    "cellTextDocuments": [{"uri": cu} for cu in cell_uris]})
        assert client.close() == 0
    finally:
        if client.proc.poll() is None:
            client.proc.kill()


@needs_pygls
def test_garbage_input_gets_errors_and_the_server_stays_up(tmp_path):
    client = Client(str(tmp_path))
    try:
        client.initialize(str(tmp_path))
        # malformed JSON: a parse error (id null)
        client.send_raw(b"{this is not json")
        err = client.wait_for(lambda m: "error" in m and m.get("id") is None, what="a parse error")
        assert err["error"]["code"] == -32700
        # valid JSON that is no JSON-RPC message
        client.send_raw(b"[1, 2, 3]")
        err = client.wait_for(lambda m: "error" in m and m.get("id") is None and m["error"]["code"] == -32600,
                              what="an invalid-request error")
        # an unknown method: MethodNotFound; an unknown notification: ignored
        r = client.request("trainlint/noSuchMethod", {})
        assert r["error"]["code"] == -32601
        client.notify("$/noSuchNotification", {})
        # a request whose params do not fit: InvalidParams, answered with its id
        r = client.request("textDocument/codeAction", {"textDocument": 42})
        assert r["error"]["code"] in (-32602, -32603)
        # a notification whose params do not fit, a change to a document never opened, a command
        # without its argument: logged, answered where there is an id, and no pop-up for any of them
        client.notify("textDocument/didOpen", {"textDocument": {"uri": 7}})
        client.notify("textDocument/didChange", {"textDocument": {"uri": "file:///nowhere.py", "version": 2},
                                                 "contentChanges": [{"text": "x"}]})
        r = client.request("workspace/executeCommand", {"command": "trainlint.applyFixAll", "arguments": []})
        assert "error" in r
        # a document that does not parse: TL000 at CPython's location
        uri = from_fs_path(str(tmp_path / "broken.py"))
        broken = ("import torch\noptimizer = torch.optim.Adam(model.parameters(\n"
                  "for x in loader:\n    loss.backward()\n    optimizer.step()\n")
        client.notify("textDocument/didOpen", {"textDocument": {
            "uri": uri, "languageId": "python", "version": 1, "text": broken}})
        (d,) = client.diagnostics(uri, 1)
        assert d["code"] == "TL000" and d["range"]["start"]["line"] == 1 and "never closed" in d["message"]
        r = client.request("textDocument/codeAction", {"textDocument": {"uri": uri}, "range": d["range"],
                                                       "context": {"diagnostics": [d]}})
        assert r["result"] == []
        # still serving: a real lint after all that
        good = from_fs_path(str(tmp_path / "ok.py"))
        client.notify("textDocument/didOpen", {"textDocument": {
            "uri": good, "languageId": "python", "version": 1, "text": open(EXAMPLE).read()}})
        assert len(client.diagnostics(good, 1)) == 5
        assert client.proc.poll() is None
        assert not [m for m in client.seen if m.get("method") == "window/showMessage"]
        assert client.close() == 0
    finally:
        if client.proc.poll() is None:
            client.proc.kill()


@needs_pygls
def test_config_per_file_ignores_exclude_reload_and_a_bad_config(project):
    sub = project / "scripts"
    sub.mkdir()
    shutil.copy(EXAMPLE, sub / "train.py")
    (project / "vendored").mkdir()
    shutil.copy(EXAMPLE, project / "vendored" / "train.py")
    config = project / "pyproject.toml"
    config.write_text('[tool.trainlint]\nignore = ["TL002"]\nextend-exclude = ["vendored"]\n'
                      '[tool.trainlint.per-file-ignores]\n"scripts/*" = ["TL001"]\n')
    text = open(EXAMPLE).read()
    uris = {name: from_fs_path(str(project / name)) for name in ("train.py", "scripts/train.py", "vendored/train.py")}
    client = Client(str(project))
    try:
        client.initialize(str(project))
        for version, uri in enumerate(uris.values(), 1):
            client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python",
                                                                    "version": version, "text": text}})
        assert _codes(client.diagnostics(uris["train.py"])) == ["TL001", "TL003", "TL004", "TL005"]
        assert _codes(client.diagnostics(uris["scripts/train.py"])) == ["TL003", "TL004", "TL005"]
        assert client.diagnostics(uris["vendored/train.py"]) == []  # excluded

        # a bad configuration: shown as a message; the server goes on with the defaults
        config.write_text('[tool.trainlint]\nignore = ["TL02"]\nslect = ["TL001"]\n')
        client.notify("workspace/didChangeWatchedFiles", {"changes": [{"uri": from_fs_path(str(config)), "type": 2}]})
        msg = client.wait_for(lambda m: m.get("method") == "window/showMessage", what="window/showMessage")
        assert msg["params"]["type"] == 1 and "pyproject.toml" in msg["params"]["message"]
        assert "configuration error" in msg["params"]["message"]
        assert _codes(client.diagnostics(uris["train.py"])) == ["TL001", "TL002", "TL003", "TL004", "TL005"]

        # fixed: reloaded, only TL005 selected now
        config.write_text('[tool.trainlint]\nselect = ["TL005"]\n')
        client.notify("workspace/didChangeWatchedFiles", {"changes": [{"uri": from_fs_path(str(config)), "type": 2}]})
        assert _codes(client.diagnostics(uris["train.py"])) == ["TL005"]
        assert client.proc.poll() is None
        assert client.close() == 0
    finally:
        if client.proc.poll() is None:
            client.proc.kill()


@needs_pygls
def test_a_changed_module_refreshes_the_documents_that_used_it(tmp_path):
    shutil.copytree(os.path.join(REPO, "examples", "project"), tmp_path / "proj")
    root = tmp_path / "proj"
    (root / "pyproject.toml").write_text('[project]\nname = "seg"\n')
    train, losses = root / "train.py", root / "seg" / "losses.py"
    uri = from_fs_path(str(train))
    client = Client(str(root))
    try:
        client.initialize(str(root))
        client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1,
                                                                "text": train.read_text()}})
        # TL003 comes from a fact in seg/losses.py (weighted_bce returns a batch mean), TL004 from one in
        # seg/models.py: the same findings, at the same places, as `trainlint train.py`
        diags = client.diagnostics(uri, 1)
        assert _codes(diags) == ["TL003", "TL004"]
        cli = subprocess.run([sys.executable, "-m", "trainlint", "--no-cache", "--output-format", "json", "train.py"],
                             cwd=str(root), capture_output=True, text=True, timeout=120)
        expected = sorted((f["code"], f["location"]["row"] - 1, f["location"]["column"] - 1, f["message"])
                          for f in json.loads(cli.stdout))
        assert sorted((d["code"], d["range"]["start"]["line"], d["range"]["start"]["character"], d["message"])
                      for d in diags) == expected
        # losses.py now returns a sum: saved elsewhere (a watched-file event), train.py is linted again
        losses.write_text(losses.read_text().replace("torch.sum(per_pixel) / b", "torch.sum(per_pixel)"))
        client.notify("workspace/didChangeWatchedFiles", {"changes": [{"uri": from_fs_path(str(losses)), "type": 2}]})
        assert _codes(client.diagnostics(uri, 1)) == ["TL004"]
        # and saved from the editor (didSave of the module): back again
        losses_uri = from_fs_path(str(losses))
        client.notify("textDocument/didOpen", {"textDocument": {"uri": losses_uri, "languageId": "python",
                                                                "version": 1, "text": losses.read_text()}})
        losses.write_text(losses.read_text().replace("torch.sum(per_pixel)", "torch.sum(per_pixel) / b"))
        client.notify("textDocument/didSave", {"textDocument": {"uri": losses_uri}})
        assert _codes(client.diagnostics(uri, 1)) == ["TL003", "TL004"]
        assert client.close() == 0
    finally:
        if client.proc.poll() is None:
            client.proc.kill()


@needs_pygls
def test_typing_is_debounced_only_the_last_version_is_published(project):
    uri = from_fs_path(str(project / "train.py"))
    text = open(EXAMPLE).read()
    client = Client(str(project), "--debounce", "1000")
    try:
        client.initialize(str(project))
        client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1,
                                                                "text": text}})
        assert len(client.diagnostics(uri, 1)) == 4  # opening is not debounced
        for version in range(2, 7):  # five keystrokes well within the debounce
            client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": version},
                                                     "contentChanges": [{"text": text + "#" * version}]})
        client.diagnostics(uri, 6)
        published = [m["params"].get("version") for m in client.seen
                     if m.get("method") == "textDocument/publishDiagnostics"]
        assert published == []  # nothing for versions 2-5
        assert client.close() == 0
    finally:
        if client.proc.poll() is None:
            client.proc.kill()


BROKEN_RULE = """
import trainlint.rules.tl005_optimizer_eps_underflow as rule
def check(ctx):
    raise RuntimeError("boom")
rule.check = check
"""


@needs_pygls
def test_an_exception_in_a_rule_becomes_tl000_and_the_server_goes_on(project):
    uri = from_fs_path(str(project / "train.py"))
    client = Client(str(project), prelude=BROKEN_RULE)
    try:
        client.initialize(str(project))
        client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1,
                                                                "text": open(EXAMPLE).read()}})
        diags = client.diagnostics(uri, 1)
        assert _codes(diags) == ["TL000", "TL001", "TL003", "TL004"]
        tl000 = next(d for d in diags if d["code"] == "TL000")
        assert "internal error in TL005" in tl000["message"] and "boom" in tl000["message"]
        client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 2},
                                                 "contentChanges": [{"text": "import torch\n"}]})
        assert client.diagnostics(uri, 2) == []
        assert client.close() == 0
    finally:
        if client.proc.poll() is None:
            client.proc.kill()


def test_without_pygls_a_one_line_error_and_exit_2():
    code = ("import sys\nsys.modules['pygls'] = None\nfrom trainlint.cli import main\n"
            "sys.argv = ['trainlint', 'server']\nmain()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and 'pip install "trainlint[lsp]"' in r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize("args", [["--help"], ["server", "--help"], ["--no-cache", "-q", EXAMPLE]])
def test_the_command_line_never_imports_pygls(args):
    code = (f"import sys\nfrom trainlint.cli import main\nsys.argv = ['trainlint', *{args!r}]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "assert 'pygls' not in sys.modules and 'lsprotocol' not in sys.modules, 'pygls imported'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_server_help_reads_well():
    r = subprocess.run([sys.executable, "-m", "trainlint", "server", "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0
    assert "Language Server" in r.stdout and "--debounce" in r.stdout and "trainlint[lsp]" in r.stdout


# -- the pure helpers behind positions and edits (in-process) -----------------------------------------

@needs_pygls
def test_positions_in_client_units():
    from trainlint.server import Lines

    lines = Lines("a = '\U0001f600'; b = 1\r\nc = 2\rd\n")
    # column 12 (1-based, characters) is `b`; in UTF-16 the emoji counts twice
    assert lines.client(1, 12, "utf-16") == (0, 12)
    assert lines.client(1, 12, "utf-32") == (0, 11)
    assert lines.client(1, 12, "utf-8") == (0, 14)
    assert lines.client(2, 1, "utf-16") == (1, 0) and lines.client(3, 2, "utf-16") == (2, 1)
    assert lines.position(len("a = '\U0001f600'; b = 1\r\n"), "utf-16") == (1, 0)


@needs_pygls
def test_minimal_edit_and_noqa_insertion():
    from trainlint.server import minimal_edit, noqa_insertion

    assert minimal_edit("abc", "abc") is None
    old, new = "x = 1\r\ny = 2\r\n", "x = 1\r\ny = 3\r\n"
    s, e, t = minimal_edit(old, new)
    assert old[:s] + t + old[e:] == new and t == "3"
    old, new = "a\r\nb\r\n", "a\r\nc\r\nb\r\n"
    s, e, t = minimal_edit(old, new)
    assert old[:s] + t + old[e:] == new and not t.startswith("\n")

    def suppress(text, row, code):
        at, ins = noqa_insertion(text, row, code)
        return (text[:at] + ins + text[at:]).split("\n")[row - 1]

    assert suppress("opt = Adam(p)\n", 1, "TL005") == "opt = Adam(p)  # noqa: TL005"
    assert suppress("opt = Adam(p)  # fp16\n", 1, "TL005") == "opt = Adam(p)  # fp16  # noqa: TL005"
    assert suppress("opt = Adam(p)  # noqa: E501\n", 1, "TL005") == "opt = Adam(p)  # noqa: E501, TL005"
    assert noqa_insertion("x = 1  # noqa\n", 1, "TL005") is None
    assert noqa_insertion('s = """a\nb"""\n', 1, "TL005") is None  # ends inside a string
    assert noqa_insertion("x = a + \\\n    b\n", 1, "TL005") is None


@needs_pygls
def test_the_garbage_collector_is_tuned_for_the_keystroke_path():
    # In its own process: the settings are process-wide. The linter's modules are imported and frozen
    # (older-generation collections during a lint skip them), the youngest generation is collected
    # less often, and garbage is still collected.
    code = (
        "import gc, sys\n"
        "from trainlint.server import GC_GEN0_THRESHOLD, tune_gc\n"
        "tune_gc()\n"
        "assert gc.isenabled() and gc.get_threshold()[0] == GC_GEN0_THRESHOLD > 700\n"
        "assert gc.get_freeze_count() > 10000, gc.get_freeze_count()\n"
        "assert 'trainlint.rules.tl001_missing_zero_grad' in sys.modules and 'libcst' in sys.modules\n"
        "class Node:\n"
        "    pass\n"
        "for _ in range(5 * GC_GEN0_THRESHOLD):\n"
        "    a, b = Node(), Node()\n"
        "    a.other, b.other = b, a\n"
        "assert gc.collect() < 2 * GC_GEN0_THRESHOLD  # cycles were collected along the way\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
