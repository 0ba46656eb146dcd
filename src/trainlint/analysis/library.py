"""Facts about well-known library APIs that hide the mechanisms the rules look for, in one place.

Each entry is a fact a rule cannot see in the user's code because it lives inside the library; each has a
test (tests/test_library.py). Names are matched on the qualified name the user's imports give.
"""

from __future__ import annotations

import re

# Library models whose training-mode forward applies BatchNorm to one value per channel.
# torchvision's DeepLabV3 head: ASPPPooling = AdaptiveAvgPool2d(1) -> Conv2d -> BatchNorm2d.
# segmentation_models_pytorch: DeepLabV3/V3+ (ASPPPooling) and PSPNet (PSPBlock on 1x1 pooling) likewise.
_BN_SINGLE_MODELS = [
    (re.compile(r"^torchvision\.models\.segmentation(\.deeplabv3)?\.deeplabv3_\w+$"),
     "`BatchNorm2d` after `AdaptiveAvgPool2d(1)` (ASPP image pooling of torchvision's DeepLabV3 head)"),
    (re.compile(r"^segmentation_models_pytorch\.(DeepLabV3|DeepLabV3Plus|PSPNet)$"),
     "`BatchNorm2d` after 1x1 pooling (segmentation_models_pytorch ASPP/PSP pooling branch)"),
]
# Library models known NOT to (so a rule can trust them: `known` and no layer).
_BN_FREE_MODELS = re.compile(
    r"^torchvision\.models\.(segmentation\.(fcn_\w+|lraspp_\w+)|resnet\d+|vgg\d+\w*|mobilenet_v[23]\w*|"
    r"efficientnet_\w+|convnext_\w+|vit_\w+|swin_\w+)$")


def library_model_batchnorm(qualname: str):
    """For a library model constructor: a Layer description (str) when it has a one-value BatchNorm,
    "" when it is known not to, None when the library model is not in the table."""
    for pattern, desc in _BN_SINGLE_MODELS:
        if pattern.match(qualname):
            return (desc, qualname, 0)
    if _BN_FREE_MODELS.match(qualname):
        return ""
    return None


# Lightning Fabric/Trainer precision strings: which put the parameters themselves in float16.
FABRIC_FP16_PARAMS = {"16-true", "half"}
FABRIC_MIXED = {"16-mixed", "16", "bf16-mixed", "bf16", "32", "32-true", "64", "64-true", "bf16-true",
                "transformer-engine"}
