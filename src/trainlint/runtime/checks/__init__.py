"""Runtime checks, one small class per code, fed by the monitor's events (see `base.Check`)."""

from __future__ import annotations

from typing import Any, Dict, Iterable, List

from trainlint.runtime.checks.base import Check
from trainlint.runtime.checks.tl101_non_finite_loss import NonFiniteLoss
from trainlint.runtime.checks.tl102_non_finite_gradient import NonFiniteGradient
from trainlint.runtime.checks.tl103_gradients_not_cleared import GradientsNotCleared
from trainlint.runtime.checks.tl104_short_batch_loss_spike import ShortBatchLossSpike
from trainlint.runtime.checks.tl105_exploding_gradients import ExplodingGradients
from trainlint.runtime.checks.tl106_collapsed_gradients import CollapsedGradients
from trainlint.runtime.checks.tl107_eps_underflow import EpsUnderflow
from trainlint.runtime.checks.tl108_parameters_not_updated import ParametersNotUpdated
from trainlint.runtime.checks.tl109_loss_diverged import LossDiverged
from trainlint.runtime.checks.tl110_loss_at_chance_level import LossAtChanceLevel
from trainlint.runtime.checks.tl111_bad_input_data import BadInputData
from trainlint.runtime.checks.tl112_batchnorm_small_batch import BatchNormSmallBatch
from trainlint.runtime.checks.tl113_dead_relu import DeadRelu
from trainlint.runtime.checks.tl114_replicas_diverged import ReplicasDiverged
from trainlint.runtime.checks.tl115_saturated_probabilities import SaturatedProbabilities

CHECKS = {c.code: c for c in (NonFiniteLoss, NonFiniteGradient, GradientsNotCleared, ShortBatchLossSpike,
                              ExplodingGradients, CollapsedGradients, EpsUnderflow, ParametersNotUpdated,
                              LossDiverged, LossAtChanceLevel, BadInputData, BatchNormSmallBatch,
                              DeadRelu, ReplicasDiverged, SaturatedProbabilities)}


def build_checks(codes: Iterable[str], ctx: Any, settings: Dict[str, Any]) -> List[Check]:
    return [CHECKS[c](ctx, settings) for c in codes if c in CHECKS]


__all__ = ["CHECKS", "Check", "build_checks"]
