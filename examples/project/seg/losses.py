import torch
import torch.nn.functional as F


def weighted_bce(logits, target):
    """Per-pixel BCE summed over each image and averaged over the batch."""
    b = target.shape[0]
    per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return torch.sum(per_pixel) / b
