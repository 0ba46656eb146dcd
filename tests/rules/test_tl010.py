"""TL010 pool-stride-exceeds-kernel."""

import pytest
from helpers import case_tests, lint, src

from trainlint.engine import _rules_matching

C = ["TL010"]

BAD = {
    "swapped_module_arguments": """
        import torch.nn as nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 16, 3)
                self.pool = nn.MaxPool2d(2, 3)  # expect: TL010
    """,
    "keywords_and_tuples": """
        from torch import nn

        features = nn.Sequential(
            nn.Conv2d(3, 64, 3),
            nn.AvgPool2d(kernel_size=(2, 2), stride=(4, 4)),  # expect: TL010
            nn.MaxPool3d(kernel_size=(1, 2, 2), stride=(1, 3, 3)),  # expect: TL010
        )
    """,
    "functional_with_a_constant": """
        import torch.nn.functional as F

        POOL_STRIDE = 4

        def forward(x):
            return F.max_pool2d(x, kernel_size=2, stride=POOL_STRIDE)  # expect: TL010
    """,
    "keras_layer": """
        from tensorflow.keras import layers

        model_layers = [
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2), strides=(3, 3)),  # expect: TL010
            layers.AveragePooling1D(strides=4),  # expect: TL010
        ]
    """,
    "fashion_mnist_cnn": """
        import torch.nn as nn

        class FashionCNN(nn.Module):
            def __init__(self):
                super().__init__()
                self.layers = nn.Sequential(
                    nn.Conv2d(in_channels=1, out_channels=16, kernel_size=2, stride=1, padding=0),
                    nn.MaxPool2d(kernel_size=2, stride=3),  # expect: TL010
                    nn.Conv2d(in_channels=16, out_channels=8, kernel_size=3, stride=2, padding=2),
                    nn.MaxPool2d(kernel_size=2, stride=1),
                    nn.Flatten(start_dim=1),
                )
    """,
    "tf_nn": """
        import tensorflow as tf

        def pool(x):
            return tf.nn.max_pool2d(x, ksize=2, strides=3, padding="VALID")  # expect: TL010
    """,
}

GOOD = {
    "default_stride": """
        import torch.nn as nn

        pool = nn.MaxPool2d(2)
        pool2 = nn.AvgPool2d(kernel_size=3)
    """,
    "overlapping_windows": """
        import torch.nn as nn

        pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        pool2 = nn.AvgPool3d(kernel_size=(2, 7, 7), stride=(1, 1, 1))
    """,
    "equal_stride": """
        import torch.nn.functional as F

        def f(x, s):
            return F.avg_pool2d(x, kernel_size=s, stride=s)
    """,
    "kernel_one_subsampling": """
        import torch.nn as nn

        downsample = nn.Sequential(nn.AvgPool2d(kernel_size=1, stride=2), nn.Conv2d(64, 128, 1))
    """,
    "dilated_max_pool": """
        import torch.nn as nn

        pool = nn.MaxPool2d(kernel_size=2, stride=3, dilation=2)
    """,
    "unknown_values": """
        import torch.nn as nn

        def make(k, s):
            return nn.MaxPool2d(k, stride=s)
    """,
    "lp_pool_norm_type_first": """
        import torch.nn as nn

        pool = nn.LPPool2d(2, 3, stride=2)
    """,
    "fpn_p6_kernel_one_positional": """
        import torch.nn.functional as F

        class LastLevelMaxPool:
            def forward(self, x):
                return [F.max_pool2d(x, 1, 2, 0)]
    """,
    "keras_fpn_p6_and_nasnet_adjust": """
        from tensorflow.keras import layers
        import keras.layers as KL

        p6 = KL.MaxPooling2D(pool_size=(1, 1), strides=2, name="fpn_p6")
        p1 = layers.AveragePooling2D((1, 1), strides=(2, 2), padding="valid")
    """,
    "large_stride_below_kernel": """
        import torch.nn.functional as F

        def esa(x):
            return F.max_pool2d(x, kernel_size=7, stride=3)
    """,
    "per_dimension_stride_within_kernel": """
        import torch.nn as nn

        pool = nn.MaxPool2d(kernel_size=2, stride=(2, 1), padding=(0, 1))
    """,
    "adaptive_pooling": """
        import torch.nn as nn

        pool = nn.AdaptiveAvgPool2d(7)
    """,
    "tf_full_ksize": """
        import tensorflow as tf

        def pool(x):
            return tf.nn.max_pool(x, ksize=[1, 3, 3, 1], strides=[1, 2, 2, 1], padding="SAME")
    """,
    "not_a_torch_pool": """
        from mylib import MaxPool2d

        pool = MaxPool2d(2, 3)
    """,
}


test_bad, test_good = case_tests(C, BAD, GOOD)


def test_warning_without_fix():
    (d,) = lint(BAD["swapped_module_arguments"], C)
    assert d.severity == "warning" and d.fix is None
    assert "3 steps with a window of 2" in d.message


def test_lp_pool_stride_past_kernel():
    (d,) = lint("""
        import torch.nn as nn

        pool = nn.LPPool2d(2, 2, stride=3)
    """, C)
    assert d.code == "TL010"


@pytest.mark.parametrize("name", BAD)
def test_positive_examples_pass_the_prefilter(name):
    assert [r.CODE for r in _rules_matching(src(BAD[name]), C)] == C
