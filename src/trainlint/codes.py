"""Every rule code trainlint knows, static and runtime (no rule implementation is imported here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional

DOCS_URL = "https://github.com/trainlint/trainlint/blob/main/rules/"


@dataclass(frozen=True)
class Code:
    code: str
    name: str
    summary: str
    kind: str  # "static" | "runtime"
    severity: str = "error"
    fix: Optional[str] = None  # "safe" | "unsafe" | None
    confirms: Optional[str] = None  # runtime: the static rule it confirms

    @property
    def page(self) -> str:
        return f"{self.code}-{self.name}.md"


CODES: Dict[str, Code] = {
    c.code: c
    for c in [
        Code("TL001", "missing-zero-grad",
             "gradients are never cleared between optimizer steps, or cleared between backward() and step()",
             "static", fix="unsafe"),
        Code("TL002", "dice-smooth-numerator",
             "the same smoothing term is added to numerator and denominator of a Dice/Tversky/IoU loss",
             "static", fix="unsafe"),
        Code("TL003", "double-loss-reduction",
             "a loss that is already a batch mean is divided by the batch size again",
             "static", fix="unsafe"),
        Code("TL004", "train-loader-drop-last",
             "a training DataLoader keeps the short last batch while the loss is averaged twice, or while a "
             "BatchNorm of the model sees one value per channel",
             "static", fix="unsafe"),
        Code("TL005", "optimizer-eps-underflow",
             "an adaptive optimizer on fp16 parameters with an eps that fp16 rounds to 0",
             "static", fix="safe"),
        Code("TL006", "amp-clip-before-unscale",
             "gradients clipped (or their norm read) after scaler.scale(loss).backward() without scaler.unscale_() first",
             "static", fix="unsafe"),
        Code("TL007", "activation-before-loss",
             "a softmax/sigmoid output fed to a loss that applies its own activation (or softmax into NLLLoss)",
             "static", fix="unsafe"),
        Code("TL008", "unstable-log-of-probability",
             "the log of a softmax or sigmoid output (use log_softmax/logsigmoid), or BCELoss on a sigmoid output",
             "static", fix="unsafe"),
        Code("TL009", "unguarded-normalisation",
             "division by a standard deviation computed from the data with no eps; NumPy float errors silenced",
             "static", fix="unsafe"),
        Code("TL010", "pool-stride-exceeds-kernel",
             "a pooling stride larger than its kernel size: the inputs between windows are never seen",
             "static", severity="warning"),
        Code("TL011", "model-mode-not-restored",
             "training continues in eval mode after validation, or evaluation runs with the model in train mode",
             "static", fix="unsafe"),
        Code("TL012", "functional-dropout-always-on",
             "functional dropout without training=self.training (or dropout built in forward) stays on in eval mode",
             "static", fix="unsafe"),
        Code("TL013", "loss-graph-kept-alive",
             "loss tensors accumulated across iterations without .item()/.detach(): every graph stays in memory",
             "static", fix="unsafe"),
        Code("TL014", "distributed-sampler-without-set-epoch",
             "a shuffling DistributedSampler is never told the epoch: every epoch sees the same order",
             "static", fix="unsafe"),
        Code("TL015", "scheduler-before-optimizer",
             "scheduler.step() runs before optimizer.step() in the same iteration: the schedule skips its first value",
             "static", severity="warning", fix="unsafe"),
        Code("TL016", "anomaly-detection-left-on",
             "autograd anomaly detection left on unconditionally: every training step runs 2-3x slower",
             "static", severity="warning", fix="unsafe"),
        Code("TL017", "forward-called-directly",
             "model.forward(x) instead of model(x): the module's forward and backward hooks do not run",
             "static", fix="unsafe"),
        Code("TL101", "non-finite-loss", "the loss became NaN/Inf", "runtime"),
        Code("TL102", "non-finite-gradient", "a gradient or parameter became NaN/Inf", "runtime"),
        Code("TL103", "gradients-not-cleared",
             "an optimizer step ran on gradients not cleared since the previous step", "runtime",
             confirms="TL001"),
        Code("TL104", "short-batch-loss-spike",
             "the loss on short batches is systematically off the scale of full batches", "runtime",
             confirms="TL004"),
        Code("TL105", "exploding-gradients", "gradient norm far above its running level", "runtime"),
        Code("TL106", "collapsed-gradients",
             "gradient norm collapses to ~0 while the loss is not small", "runtime", confirms="TL002"),
        Code("TL107", "eps-underflow", "an optimizer eps is 0 in its state dtype", "runtime",
             confirms="TL005"),
        Code("TL108", "parameters-not-updated",
             "optimizer steps without gradients, or on gradients cleared between backward() and step()",
             "runtime", confirms="TL001"),
        Code("TL109", "loss-diverged", "the loss rose far above its starting level without NaN", "runtime"),
        Code("TL110", "loss-at-chance-level",
             "a cross-entropy loss stalls at ln(classes), the loss of a uniform guess", "runtime"),
        Code("TL111", "bad-input-data",
             "a training batch holds NaN/Inf, or input features whose scales are orders of magnitude apart",
             "runtime"),
        Code("TL112", "batchnorm-small-batch",
             "BatchNorm in training mode on batches too small for its statistics", "runtime",
             confirms="TL004"),
        Code("TL113", "dead-relu",
             "most units of a ReLU layer output 0 for every sample, for many steps", "runtime"),
        Code("TL114", "replicas-diverged",
             "parameters replicated across torch.distributed ranks (torchrun) became different on some rank",
             "runtime"),
        Code("TL115", "saturated-probabilities",
             "softmax/sigmoid outputs saturated to exactly 0 and 1 in their dtype, for many steps", "runtime"),
    ]
}

# TL000 is not a rule: it reports a file that could not be linted (syntax error, bad encoding,
# internal error). It cannot be selected away.
TL000 = Code("TL000", "file-error", "the file could not be linted", "static")

STATIC_CODES: List[str] = [c for c, v in CODES.items() if v.kind == "static"]
RUNTIME_CODES: List[str] = [c for c, v in CODES.items() if v.kind == "runtime"]


def rule_url(code: str) -> str:
    info = CODES.get(code)
    return DOCS_URL + info.page if info else DOCS_URL


def expand_selectors(selectors: Iterable[str], universe: Iterable[str]) -> List[str]:
    """Expand `ALL`, `TL`, `TL0`, `TL00`, `TL001` style selectors; raise ValueError on an unknown one."""
    universe = list(universe)
    out: List[str] = []
    for sel in selectors:
        s = sel.strip().upper()
        if not s:
            continue
        if s == "ALL":
            matched = universe
        else:
            matched = [c for c in universe if c.startswith(s)]
            if not matched and not any(c.startswith(s) for c in CODES):
                raise ValueError(f"unknown rule selector {sel!r}")
        for c in matched:
            if c not in out:
                out.append(c)
    return out


def is_valid_selector(sel: str) -> bool:
    s = sel.strip().upper()
    return s == "ALL" or any(c.startswith(s) for c in CODES) and len(s) >= 2


def did_you_mean(word: str, candidates: Iterable[str]) -> Optional[str]:
    """The candidate closest to a mistyped `word` (a command, a config key, a rule code), or None."""
    import difflib

    candidates = list(candidates)
    by_upper = {c.upper(): c for c in candidates}
    match = difflib.get_close_matches(word.upper(), list(by_upper), n=1, cutoff=0.6)
    return by_upper[match[0]] if match else None


def unknown_code_hint(sel: str) -> str:
    """` (did you mean `TL001`?)` for a mistyped rule selector, else the empty string."""
    s = sel.strip().upper()
    names = {c.name: c.code for c in CODES.values()}
    if s.lower() in names:
        return f" (did you mean `{names[s.lower()]}`? selectors are codes, not names)"
    close = did_you_mean(s, list(CODES))
    return f" (did you mean `{close}`?)" if close else ""
