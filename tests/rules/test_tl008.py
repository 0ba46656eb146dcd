"""TL008 unstable-log-of-probability."""

import pytest
from helpers import assert_fix_roundtrip, case_tests, found, src

from trainlint.engine import _rules_matching, lint_text
from helpers import options

C = ["TL008"]

BAD = {
    "hand_written_cross_entropy": """
        import torch
        import torch.nn.functional as F

        def train_step(model, x, y, optimizer):
            logits = model(x)
            probs = F.softmax(logits, dim=1)
            loss = -(F.one_hot(y, 10) * torch.log(probs)).sum(dim=1).mean()  # expect: TL008
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    """,
    "log_of_softmax_inline": """
        import torch

        def nll(logits, target):
            logp = torch.log(torch.softmax(logits, dim=-1))  # expect: TL008
            return -logp.gather(1, target[:, None]).mean()
    """,
    "method_forms": """
        def policy_loss(logits, actions, advantages):
            log_probs = logits.softmax(-1).log()  # expect: TL008
            return -(log_probs[range(len(actions)), actions] * advantages).mean()
    """,
    "log_of_sigmoid_and_one_minus_sigmoid": """
        import torch

        def bce_by_hand(logit, y):
            p = torch.sigmoid(logit)
            return -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()  # expect: TL008, TL008
    """,
    "gan_generator_loss": """
        import torch

        def generator_loss(d_fake_logits):
            return -torch.log(torch.sigmoid(d_fake_logits)).mean()  # expect: TL008
    """,
    "softmax_module_attribute": """
        import torch
        import torch.nn as nn

        class Attention(nn.Module):
            def __init__(self):
                super().__init__()
                self.softmax = nn.Softmax(dim=-1)

            def forward(self, q, k):
                attn = self.softmax(q @ k.transpose(-2, -1))
                return torch.log(attn)  # expect: TL008
    """,
    "model_of_this_module_ends_in_softmax": """
        import torch
        import torch.nn as nn

        class Classifier(nn.Module):
            def __init__(self):
                super().__init__()
                self.head = nn.Sequential(nn.Linear(128, 10), nn.Softmax(dim=1))

            def forward(self, x):
                return self.head(x)

        model = Classifier()

        def train(loader, opt):
            for x, y in loader:
                out = model(x)
                loss = -torch.log(out[range(len(y)), y]).mean()  # expect: TL008
                opt.zero_grad()
                loss.backward()
                opt.step()
    """,
    "tensorflow_log_softmax": """
        import tensorflow as tf

        def loss_fn(y_true, logits):
            probs = tf.nn.softmax(logits)
            return -tf.reduce_sum(y_true * tf.math.log(probs), axis=-1)  # expect: TL008
    """,
    "bce_on_sigmoid_functional": """
        import torch
        import torch.nn.functional as F

        def mask_loss(pred_logits, gt_mask):
            return F.binary_cross_entropy(torch.sigmoid(pred_logits), gt_mask.float())  # expect: TL008
    """,
    "bce_criterion_on_discriminator_with_sigmoid": """
        import torch
        import torch.nn as nn

        class Discriminator(nn.Module):
            def __init__(self):
                super().__init__()
                self.model = nn.Sequential(nn.Linear(784, 256), nn.LeakyReLU(0.2), nn.Linear(256, 1))
                self.adv_layer = nn.Sequential(nn.Linear(1, 1), nn.Sigmoid())

            def forward(self, img):
                return self.adv_layer(self.model(img.view(img.size(0), -1)))

        adversarial_loss = nn.BCELoss()
        discriminator = Discriminator().cuda()

        for imgs in dataloader:
            real_loss = adversarial_loss(discriminator(imgs), valid)  # expect: TL008
    """,
}

GOOD = {
    "log_softmax": """
        import torch.nn.functional as F

        def loss(logits, y):
            return F.nll_loss(F.log_softmax(logits, dim=1), y)
    """,
    "eps_guarded_log": """
        import torch
        import torch.nn.functional as F

        def entropy(logits, eps=1e-8):
            p = F.softmax(logits, dim=1)
            return -(p * torch.log(p + eps)).sum(1).mean()
    """,
    "clamped_log": """
        import torch

        def focal(logit, y, gamma=2.0):
            p = torch.sigmoid(logit).clamp(min=1e-6, max=1 - 1e-6)
            return -(y * (1 - p) ** gamma * torch.log(p)).mean()

        def focal2(logit, y):
            p = torch.sigmoid(logit)
            p = torch.clamp(p, 1e-6, 1 - 1e-6)
            return -(y * torch.log(p)).mean()
    """,
    "log_of_a_value_that_is_not_a_probability": """
        import torch

        def gaussian_nll(mu, sigma, x):
            return (torch.log(sigma) + (x - mu) ** 2 / (2 * sigma ** 2)).mean()
    """,
    "rebound_in_a_branch": """
        import torch
        import torch.nn.functional as F

        def loss(logits, y, smooth):
            p = F.softmax(logits, dim=1)
            if smooth:
                p = p * 0.9 + 0.01
            return -(y * torch.log(p)).sum(1).mean()
    """,
    "numpy_log_of_probabilities": """
        import numpy as np
        from scipy.special import softmax

        def evaluate(logits):
            p = softmax(logits, axis=1)
            return -np.log(p).mean()
    """,
    "logging_call": """
        import logging
        import torch

        def step(x):
            p = torch.sigmoid(x)
            logging.log(logging.INFO, p)
            return p
    """,
    "bce_with_logits": """
        import torch.nn as nn

        criterion = nn.BCEWithLogitsLoss()

        def loss(logits, y):
            return criterion(logits, y)
    """,
    "bce_on_a_value_that_is_not_a_sigmoid": """
        import torch.nn.functional as F

        def loss(pred, y):
            return F.binary_cross_entropy(pred.clamp(1e-6, 1 - 1e-6), y)
    """,
    "model_returns_logits_while_training": """
        import torch
        import torch.nn as nn

        class Net(nn.Module):
            def forward(self, x):
                x = self.fc(x)
                if self.training:
                    return x
                return torch.sigmoid(x)

        net = Net()

        def train(x, y):
            out = net(x)
            return -(y * torch.log(out)).mean()
    """,
    "parameter_of_unknown_origin": """
        import torch

        def nll(probs, y):
            return -torch.log(probs[range(len(y)), y]).mean()
    """,
}


test_bad, test_good = case_tests(C, BAD, GOOD)


def test_reference_values_in_unit_tests_are_not_reported():
    code = src("""
        import torch

        def test_bce():
            logit = torch.tensor([1.5])
            expected = -torch.log(torch.sigmoid(logit))
    """)
    assert lint_text(code, "tests/test_losses.py", C, options()).diagnostics == []
    assert len(lint_text(code, "losses.py", C, options()).diagnostics) == 1


def test_bce_on_sigmoid_is_a_warning():
    from helpers import lint

    (d,) = lint(BAD["bce_on_sigmoid_functional"], C)
    assert d.severity == "warning"


def test_fix_log_softmax():
    assert_fix_roundtrip(BAD["log_of_softmax_inline"], C, """
        import torch

        def nll(logits, target):
            logp = torch.log_softmax(logits, dim=-1)
            return -logp.gather(1, target[:, None]).mean()
    """)


def test_fix_method_form():
    fixed = assert_fix_roundtrip(BAD["method_forms"], C)
    assert "log_probs = logits.log_softmax(-1)  #" in fixed


def test_fix_logsigmoid_uses_the_modules_alias():
    fixed = assert_fix_roundtrip("""
        import torch
        import torch.nn.functional as F

        def d_loss(real, fake):
            return -(torch.log(torch.sigmoid(real)) + torch.log(1 - torch.sigmoid(fake))).mean()
    """, C)
    assert "-(F.logsigmoid(real) + F.logsigmoid(-fake)).mean()" in fixed


def test_fix_logsigmoid_negates_a_sum_in_parentheses():
    fixed = assert_fix_roundtrip("""
        import torch

        def f(a, b):
            return torch.log(1 - torch.sigmoid(a + b))
    """, C)
    assert "return torch.nn.functional.logsigmoid(-(a + b))" in fixed


def test_fix_multiline_call_keeps_the_inner_layout():
    assert_fix_roundtrip("""
        import torch.nn.functional as F

        def loss(logits, y):
            logp = F.softmax(
                logits,
                dim=1,
            ).log()
            return F.nll_loss(logp, y)
    """, C, """
        import torch.nn.functional as F

        def loss(logits, y):
            logp = F.log_softmax(
                logits,
                dim=1,
            )
            return F.nll_loss(logp, y)
    """)


def test_fix_bce_to_with_logits():
    assert_fix_roundtrip(BAD["bce_on_sigmoid_functional"], C, """
        import torch
        import torch.nn.functional as F

        def mask_loss(pred_logits, gt_mask):
            return F.binary_cross_entropy_with_logits(pred_logits, gt_mask.float())
    """)


def test_fix_bce_multiline_with_keywords():
    fixed = assert_fix_roundtrip("""
        import torch
        import torch.nn.functional as F

        def loss(pred_center_region, gt, mask):
            return F.binary_cross_entropy(
                torch.sigmoid(pred_center_region),
                gt.float(),
                reduction='none')
    """, C)
    assert "F.binary_cross_entropy_with_logits(\n        pred_center_region,\n        gt.float(),\n" in fixed


def test_no_fix_when_the_probability_comes_through_a_name():
    from helpers import lint

    (d,) = lint(BAD["hand_written_cross_entropy"], C)
    assert d.fix is None
    (d,) = lint(BAD["bce_criterion_on_discriminator_with_sigmoid"], C)
    assert d.fix is None


def test_no_fix_for_keras_backend_softmax():
    from helpers import lint

    (d,) = lint("""
        from keras import backend as K

        def loss(y_true, logits):
            return -K.sum(y_true * K.log(K.softmax(logits)), axis=-1)
    """, C)
    assert d.fix is None


@pytest.mark.parametrize("name", BAD)
def test_positive_examples_pass_the_prefilter(name):
    assert [r.CODE for r in _rules_matching(src(BAD[name]), C)] == C


def test_found_helper_sanity():
    assert found(GOOD["log_softmax"], C) == set()
