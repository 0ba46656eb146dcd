"""TL002 dice-smooth-numerator."""

import pytest
from helpers import case_tests, assert_fix_roundtrip

C = ["TL002"]

BAD = {
    "monai_style_function": """
        def dice_loss(pred, target, smooth=1.0):
            intersection = (pred * target).sum()
            denominator = pred.sum() + target.sum()
            return 1.0 - (2.0 * intersection + smooth) / (denominator + smooth)  # expect: TL002
    """,
    "module_with_self_smooth": """
        import torch.nn as nn

        class DiceLoss(nn.Module):
            def __init__(self, smooth=1.0):
                super().__init__()
                self.smooth = smooth

            def forward(self, logits, target):
                p = logits.sigmoid()
                inter = (p * target).sum(dim=(2, 3))
                union = p.sum(dim=(2, 3)) + target.sum(dim=(2, 3))
                dice = (2 * inter + self.smooth) / (union + self.smooth)  # expect: TL002
                return 1 - dice.mean()
    """,
    "keras_backend": """
        from keras import backend as K

        def dice_coef(y_true, y_pred, smooth=1):
            y_true_f = K.flatten(y_true)
            y_pred_f = K.flatten(y_pred)
            intersection = K.sum(y_true_f * y_pred_f)
            return (2. * intersection + smooth) / (K.sum(y_true_f) + K.sum(y_pred_f) + smooth)  # expect: TL002

        def dice_coef_loss(y_true, y_pred):
            return -dice_coef(y_true, y_pred)

        model.compile(optimizer="adam", loss=dice_coef_loss, metrics=[dice_coef])
    """,
    "clamped_denominator_still_has_smooth": """
        import torch

        def soft_dice_loss(pred, target, smooth=1.0, eps=1e-8):
            inter = (pred * target).sum()
            return 1 - (2 * inter + smooth) / (pred.sum() + target.sum() + smooth).clamp_min(eps)  # expect: TL002

        def nnunet_style_loss(x, y, smooth=1.0):
            tp = (x * y).sum(0)
            nominator = 2 * tp + smooth
            denominator = torch.clip(x.sum(0) + y.sum(0) + smooth, 1e-8)
            return -(nominator / denominator).mean()  # expect: TL002
    """,
    "metric_used_as_loss": """
        def iou_score(p, t, smooth=1.0):
            inter = (p * t).sum()
            return (inter + smooth) / (p.sum() + t.sum() - inter + smooth)  # expect: TL002

        def train_step(p, t):
            loss = 1 - iou_score(p, t)
            loss.backward()
    """,
    "matmul_overlap": """
        def dice_loss(y_true, y_pred, smooth=1.0):
            inter = y_true @ y_pred
            return 1 - (2 * inter + smooth) / (y_true.sum() + y_pred.sum() + smooth)  # expect: TL002
    """,
    "tversky_through_locals": """
        class TverskyLoss:
            def __call__(self, p, t):
                tp = (p * t).sum()
                fp = (p * (1 - t)).sum()
                fn = ((1 - p) * t).sum()
                num = tp + self.smooth
                den = tp + self.alpha * fp + self.beta * fn + self.smooth
                return 1 - num / den  # expect: TL002
    """,
    "soft_iou_constant": """
        import torch

        def soft_iou(logits, mask):
            probs = torch.sigmoid(logits)
            inter = torch.sum(probs * mask)
            union = torch.sum(probs) + torch.sum(mask) - inter
            return 1 - (inter + 1e-6) / (union + 1e-6)  # expect: TL002
    """,
    "jaccard_smooth_first": """
        def jaccard(a, b, smooth=100):
            overlap = (a * b).sum(-1)
            total = (a + b).sum(-1)
            return (smooth + overlap) / (smooth + total - overlap)  # expect: TL002
    """,
    "generalized_dice_eps_both": """
        def gdl(pred, target, w, eps=1e-5):
            numerator = (w * (pred * target).sum(0)).sum()
            denominator = (w * (pred + target).sum(0)).sum()
            return 1 - 2 * (numerator + eps) / (denominator + eps)  # expect: TL002
    """,
    "split_over_locals_with_torch_sum": """
        import torch

        def dice_loss_with_logits(pred, target, smooth=0.001):
            pred = torch.sigmoid(pred).view(pred.size(0), -1)
            target = target.view(target.size(0), -1)
            a = torch.sum(pred * target, 1) + smooth
            b = torch.sum(pred * pred, 1) + smooth
            c = torch.sum(target * target, 1) + smooth
            d = (2 * a) / (b + c)  # expect: TL002
            return 1 - d
    """,
}

GOOD = {
    "precision_and_recall_metrics": """
        import torch

        def precision(pr, gt, eps=1e-7):
            tp = torch.sum(gt * pr)
            fp = torch.sum(pr) - tp
            return (tp + eps) / (tp + fp + eps)

        def recall(pr, gt, eps=1e-7):
            tp = torch.sum(gt * pr)
            fn = torch.sum(gt) - tp
            return (tp + eps) / (tp + fn + eps)
    """,
    "smooth_only_in_denominator": """
        def dice_loss(pred, target, smooth=1.0):
            intersection = (pred * target).sum()
            return 1.0 - (2.0 * intersection) / (pred.sum() + target.sum() + smooth)
    """,
    "eps_via_clamp_min": """
        def dice_loss(pred, target):
            inter = (pred * target).sum()
            return 1 - 2 * inter / (pred.sum() + target.sum()).clamp_min(1e-6)
    """,
    "monai_distinct_terms": """
        def dice(i, g, p, smooth_nr=1e-5, smooth_dr=1e-5):
            return 1.0 - (2.0 * i + smooth_nr) / (g + p + smooth_dr)
    """,
    "normalisation_not_overlap": """
        def standardize(x, eps=1e-5):
            return (x - x.mean() + eps) / (x.std() + eps)
    """,
    "ratio_of_counts": """
        def accuracy(correct, total, smooth=1):
            return (correct + smooth) / (total + smooth)
    """,
    "laplace_smoothed_probability": """
        def prob(count, n, k, alpha=1.0):
            return (count + alpha) / (n + k * alpha)
    """,
    "numpy_evaluation_metric": """
        import numpy as np

        def dice_score(pred_mask: np.ndarray, gt_mask: np.ndarray) -> float:
            smooth = 1e-5
            return (2.0 * (pred_mask * gt_mask).sum() + smooth) / (pred_mask.sum() + gt_mask.sum() + smooth)

        print(dice_score(a, b))
    """,
    "metric_class_not_used_as_loss": """
        class DSCMetric:
            def __call__(self, p, t, smooth=1.0):
                inter = (p * t).sum()
                return (2 * inter + smooth) / (p.sum() + t.sum() + smooth)
    """,
    "common_term_is_the_overlap": """
        def iou(tp, fp, fn):
            return tp / (tp + fp + fn)
    """,
    "split_over_locals_smooth_only_below": """
        import torch

        def dice_loss_with_logits(pred, target, smooth=0.001):
            a = torch.sum(pred * target, 1)
            b = torch.sum(pred * pred, 1) + smooth
            c = torch.sum(target * target, 1) + smooth
            d = (2 * a) / (b + c)
            return 1 - d
    """,
}


test_bad, test_good = case_tests(C, BAD, GOOD)


def test_fix_removes_term_from_numerator():
    assert_fix_roundtrip(BAD["monai_style_function"], C, """
        def dice_loss(pred, target, smooth=1.0):
            intersection = (pred * target).sum()
            denominator = pred.sum() + target.sum()
            return 1.0 - (2.0 * intersection) / (denominator + smooth)
    """)


def test_fix_through_local_assignment():
    fixed = assert_fix_roundtrip(BAD["tversky_through_locals"], C)
    assert "num = tp\n" in fixed and "self.beta * fn + self.smooth" in fixed


def test_fix_smooth_first():
    fixed = assert_fix_roundtrip(BAD["jaccard_smooth_first"], C)
    assert "return (overlap) / (smooth + total - overlap)" in fixed


@pytest.mark.parametrize("name", BAD)
def test_every_fix_round_trips(name):
    assert_fix_roundtrip(BAD[name], C)
