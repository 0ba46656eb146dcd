"""Runtime check thresholds: defaults and the `[tool.trainlint.runtime]` keys (no torch import here)."""

from __future__ import annotations

from typing import Any, Dict

DEFAULTS: Dict[str, Any] = {
    # how often (in optimizer steps) device-side scalars are copied to the host
    "every": 50,
    # TL104: a short final batch whose loss differs from the median full batch of its epoch by at
    # least this factor (either way) ...
    "spike-factor": 2.0,
    # ... in at least this fraction of the epochs that end with a short batch
    "spike-epoch-fraction": 0.5,
    # TL105: a gradient norm this many times above its running median
    "explode-factor": 10.0,
    # steps of history before TL105/TL106 judge anything
    "warmup-steps": 20,
    # TL106: gradient norm below this, for at least `collapse-steps` consecutive steps ...
    "collapse-norm": 1e-7,
    "collapse-steps": 20,
    # ... while the loss stays above this fraction of its first value
    "collapse-loss-fraction": 0.1,
}
