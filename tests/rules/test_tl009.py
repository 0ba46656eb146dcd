"""TL009 unguarded-normalisation."""

import pytest
from helpers import assert_fix_roundtrip, case_tests, lint, src

from trainlint.engine import _rules_matching

C = ["TL009"]

BAD = {
    "advantage_normalisation": """
        def training_step(self, batch, batch_idx):
            state, action, old_logp, qval, adv = batch
            adv = (adv - adv.mean()) / adv.std()  # expect: TL009
            return self.actor_loss(state, action, old_logp, adv)
    """,
    "feature_statistics_through_names": """
        import numpy as np

        X_train = np.load("train.npy")
        mean = X_train.mean(axis=0)
        std = X_train.std(axis=0)
        X_train = (X_train - mean) / std  # expect: TL009
    """,
    "per_clip_audio_normalisation": """
        import torch

        def load(path):
            wav, sr = torchaudio.load(path)
            wav = wav - wav.mean()
            wav /= torch.std(wav)  # expect: TL009
            return wav
    """,
    "normaliser_class": """
        import numpy as np

        class Normalizer:
            def fit(self, data):
                self.mean = data.mean(0)
                self.std = np.std(data, axis=0)

            def transform(self, x):
                return (x - self.mean) / self.std  # expect: TL009
    """,
    "sqrt_of_variance": """
        import torch

        def standardise(x):
            mu = x.mean(dim=-1, keepdim=True)
            return (x - mu) / torch.sqrt(x.var(dim=-1, keepdim=True))  # expect: TL009
    """,
    "pandas_columns": """
        import pandas as pd

        df = pd.read_csv("train.csv")
        df = (df - df.mean()) / df.std()  # expect: TL009
    """,
    "the_field_reports_loader": """
        import numpy as np

        def normalize(image):
            mean = np.mean(image.astype(np.float32), axis=0)
            std = np.std(image.astype(np.float32), axis=0)
            np.seterr(divide='ignore', invalid='ignore')  # expect: TL009
            image_nor = (image.astype(np.float32) - mean) / std  # expect: TL009
            return image_nor
    """,
    "standardised_target_fed_to_the_loss": """
        import torch

        def training_step(model, x, y):
            zy = (y - y.mean()) / y.std()  # expect: TL009
            pred = model(x)
            return ((pred - zy) ** 2).mean()
    """,
    "standardised_features_weighted_and_summed": """
        import torch

        def score(x, w):
            z = (x - x.mean(0)) / x.std(0)  # expect: TL009
            return (z * w).sum(-1)
    """,
    "standardised_and_correlated_but_also_fed_to_the_model": """
        import torch

        def step(model, x, y):
            zx = (x - x.mean()) / x.std()  # expect: TL009
            zy = (y - y.mean()) / (y.std() + 1e-8)
            corr = (zx * zy).mean()
            return model(zx), corr
    """,
    "in_place_standardisation_then_returned": """
        import numpy as np

        def standardise(x, y):
            x = x - x.mean()
            x /= x.std()  # expect: TL009
            y = (y - y.mean()) / (y.std() + 1e-8)
            corr = np.mean(x * y)
            return x, corr
    """,
    "numpy_errors_silenced": """
        import numpy as np

        np.seterr(divide="ignore", invalid="ignore")  # expect: TL009
    """,
}

GOOD = {
    "inference_pipeline_under_no_grad": """
        import torch

        class Pipeline:
            @staticmethod
            def adaptive_normalization(source, reference):
                source_mean = source.mean(dim=(1, 2, 3), keepdim=True)
                source_std = source.std(dim=(1, 2, 3), keepdim=True)
                normalized = (source - source_mean) / source_std
                return normalized * reference.std() + reference.mean()

            @torch.no_grad()
            def __call__(self, source, reference):
                return self.adaptive_normalization(source, reference)
    """,
    "eps_added": """
        def normalise(adv):
            return (adv - adv.mean()) / (adv.std() + 1e-8)
    """,
    "clamped_std": """
        import torch

        def normalise(x):
            std = x.std(0).clamp(min=1e-6)
            return (x - x.mean(0)) / std
    """,
    "repaired_in_place": """
        import numpy as np

        def fit_transform(X):
            mean = X.mean(0)
            std = X.std(0)
            std[std == 0] = 1.0
            return (X - mean) / std
    """,
    "checked_before_use": """
        import numpy as np

        def zscore(x):
            std = np.std(x)
            if std == 0:
                return np.zeros_like(x)
            return (x - np.mean(x)) / std
    """,
    "maximum_guard": """
        import numpy as np

        def zscore(x, eps=1e-8):
            return (x - x.mean()) / np.maximum(x.std(), eps)
    """,
    "constant_statistics": """
        MEAN, STD = 0.1307, 0.3081

        def normalise(x):
            return (x - MEAN) / STD
    """,
    "imagenet_constants": """
        import torch

        mean = torch.tensor([0.485, 0.456, 0.406])
        std = torch.tensor([0.229, 0.224, 0.225])

        def normalise(img):
            return (img - mean) / std
    """,
    "layer_norm_with_eps": """
        import torch

        def layer_norm(x, eps=1e-5):
            u = x.mean(-1, keepdim=True)
            s = (x - u).pow(2).mean(-1, keepdim=True)
            return (x - u) / torch.sqrt(s + eps)
    """,
    "rescaling_not_normalising": """
        import torch

        def init_bases(shape):
            a = torch.rand(shape)
            return a / a.std()
    """,
    "errstate_around_a_metric": """
        import numpy as np

        def per_class_iou(hist):
            with np.errstate(divide="ignore", invalid="ignore"):
                iou = np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist))
            return np.nanmean(iou)
    """,
    "seterr_raise": """
        import numpy as np

        np.seterr(all="raise")
    """,
    "tuple_bound_statistics": """
        def fit_transform(X):
            mean, std = X.mean(0), X.std(0)
            return (X - mean) / std
    """,
    "in_place_clamp": """
        import torch

        def whiten(x):
            std = x.std(0)
            std.clamp_(min=1e-5)
            return (x - x.mean(0)) / std
    """,
    "seterr_inside_errstate": """
        import numpy as np

        def apply(f, a, b):
            with np.errstate():
                np.seterr(divide="ignore", invalid="ignore")
                return f(a, b)
    """,
    "seterr_saved_and_restored": """
        import numpy as np

        def run(f):
            old = np.seterr(divide="ignore")
            try:
                return f()
            finally:
                np.seterr(**old)
    """,
    "gaussian_latents_restandardised": """
        def rescale(latents, anchor_mean, anchor_std):
            return (latents - latents.mean()) / latents.std() * anchor_std + anchor_mean
    """,
    "pearson_correlation_metric": """
        from keras import ops

        def pearson_correlation(y_true, y_pred, axis=-1):
            y_true_norm = y_true - ops.mean(y_true, axis=axis, keepdims=True)
            y_pred_norm = y_pred - ops.mean(y_pred, axis=axis, keepdims=True)
            y_true_norm = y_true_norm / ops.std(y_true_norm, axis=axis, keepdims=True)
            y_pred_norm = y_pred_norm / ops.std(y_pred_norm, axis=axis, keepdims=True)
            return ops.mean(y_true_norm * y_pred_norm, axis=axis)
    """,
    "correlation_written_in_one_expression": """
        import torch

        def corr(a, b):
            n = a.numel()
            return torch.sum((a - a.mean()) / a.std() * (b - b.mean()) / b.std()) / (n - 1)
    """,
    "correlation_with_in_place_standardisation": """
        import numpy as np

        def pearson(x, y):
            x = x - x.mean()
            x /= x.std()
            y = (y - y.mean()) / y.std()
            return np.mean(x * y)
    """,
    "std_parameter": """
        def normalise(x, mean, std):
            return (x - mean) / std
    """,
}


test_bad, test_good = case_tests(C, BAD, GOOD)


def test_fix_adds_eps():
    assert_fix_roundtrip(BAD["advantage_normalisation"], C, """
        def training_step(self, batch, batch_idx):
            state, action, old_logp, qval, adv = batch
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            return self.actor_loss(state, action, old_logp, adv)
    """)


def test_fix_through_a_name_and_augmented_division():
    fixed = assert_fix_roundtrip(BAD["feature_statistics_through_names"], C)
    assert "X_train = (X_train - mean) / (std + 1e-8)" in fixed
    fixed = assert_fix_roundtrip(BAD["per_clip_audio_normalisation"], C)
    assert "wav /= (torch.std(wav) + 1e-8)" in fixed


def test_fix_multiline_denominator():
    fixed = assert_fix_roundtrip("""
        import torch

        def standardise(x):
            return (x - x.mean(0)) / torch.std(
                x,
                dim=0,
            )
    """, C)
    assert "/ (torch.std(\n        x,\n        dim=0,\n    ) + 1e-8)" in fixed


def test_seterr_in_tests_is_not_reported():
    from helpers import options
    from trainlint.engine import lint_text

    code = src(BAD["numpy_errors_silenced"])
    assert lint_text(code, "tests/test_ops.py", C, options()).diagnostics == []


def test_reference_values_in_tests_are_not_reported():
    # MONAI tests/transforms/test_normalize_intensity.py: the expected value of the transform under test
    from helpers import options
    from trainlint.engine import lint_text

    code = src("""
        import numpy as np

        class TestNormalizeIntensity:
            def test_default(self):
                normalized = NormalizeIntensity()(self.imt)
                expected = (self.imt - np.mean(self.imt)) / np.std(self.imt)
                assert_allclose(normalized, expected, rtol=1e-3)
    """)
    assert lint_text(code, "tests/transforms/test_normalize_intensity.py", C, options()).diagnostics == []
    assert [d.code for d in lint_text(code, "transforms.py", C, options()).diagnostics] == ["TL009"]


def test_seterr_is_a_warning_without_fix():
    (d,) = lint(BAD["numpy_errors_silenced"], C)
    assert d.severity == "warning" and d.fix is None


@pytest.mark.parametrize("name", BAD)
def test_positive_examples_pass_the_prefilter(name):
    assert [r.CODE for r in _rules_matching(src(BAD[name]), C)] == C
