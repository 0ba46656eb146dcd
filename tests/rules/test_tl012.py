"""TL012 functional-dropout-always-on: true positives (marked `# expect: TL012`) and near-misses."""

from helpers import assert_fix_roundtrip, case_tests, fix, lint, src

from trainlint.engine import _rules_matching

C = ["TL012"]

BAD = {
    "functional_dropout_in_forward": """
        import torch.nn as nn
        import torch.nn.functional as F

        class MLP(nn.Module):
            def __init__(self, d, p=0.5):
                super().__init__()
                self.fc1 = nn.Linear(d, d)
                self.fc2 = nn.Linear(d, 10)
                self.p = p

            def forward(self, x):
                x = F.relu(self.fc1(x))
                x = F.dropout(x, self.p)  # expect: TL012
                return self.fc2(x)
    """,
    "dropout2d_keyword_p_full_path": """
        import torch
        from torch import nn

        class Encoder(nn.Module):
            def forward(self, x):
                x = self.conv(x)
                return torch.nn.functional.dropout2d(x, p=0.2, inplace=True)  # expect: TL012
    """,
    "helper_method_of_a_module": """
        from torch.nn import Module
        from torch.nn import functional as F

        class Attention(Module):
            def _drop(self, attn):
                return F.dropout(attn, p=self.attn_pdrop)  # expect: TL012

            def forward(self, q, k, v):
                attn = (q @ k.transpose(-2, -1)).softmax(-1)
                return self._drop(attn) @ v
    """,
    "subclass_of_a_local_module": """
        import torch.nn as nn
        import torch.nn.functional as F

        class Base(nn.Module):
            pass

        class Head(Base):
            def forward(self, x):
                return self.out(F.alpha_dropout(x, 0.1))  # expect: TL012
    """,
    "project_base_class_with_forward": """
        import torch
        import torch.nn.functional as F
        from .base import BaseModel

        class FM(BaseModel):
            def forward(self, x):
                x = self.embedding(x)
                x = F.dropout(x, p=self.dropout)  # expect: TL012
                return torch.sigmoid(self.linear(x))
    """,
    "nn_dropout_built_in_forward": """
        import torch.nn as nn

        class Classifier(nn.Module):
            def forward(self, x):
                h = self.body(x)
                h = nn.Dropout(0.3)(h)  # expect: TL012
                return self.head(h)
    """,
    "nn_dropout_reassigned_every_call": """
        from torch import nn

        class Net(nn.Module):
            def forward(self, x):
                self.drop = nn.Dropout2d(p=self.p)  # expect: TL012
                return self.drop(self.conv(x))
    """,
    "sdpa_constant_dropout": """
        import torch.nn.functional as F
        from torch import nn

        class SelfAttention(nn.Module):
            def __init__(self, dim, dropout):
                super().__init__()
                self.qkv = nn.Linear(dim, 3 * dim)
                self.dropout = dropout

            def forward(self, x):
                q, k, v = self.qkv(x).chunk(3, dim=-1)
                return F.scaled_dot_product_attention(
                    q, k, v,
                    dropout_p=self.dropout,  # expect: TL012
                    is_causal=True,
                )
    """,
    "lightning_module": """
        import pytorch_lightning as pl
        import torch.nn.functional as F

        class LitModel(pl.LightningModule):
            def forward(self, x):
                return self.layer2(F.dropout(self.layer1(x), 0.25))  # expect: TL012
    """,
}

GOOD = {
    "training_follows_the_module": """
        import torch.nn as nn
        import torch.nn.functional as F

        class MLP(nn.Module):
            def forward(self, x):
                x = F.dropout(x, p=0.5, training=self.training)
                x = F.dropout(x, 0.5, self.training)
                return x
    """,
    "mc_dropout_is_deliberate": """
        import torch.nn as nn
        import torch.nn.functional as F

        class BayesNet(nn.Module):
            def forward(self, x):
                return self.out(F.dropout(self.fc(x), p=0.2, training=True))
    """,
    "plain_function_outside_a_class": """
        import torch.nn.functional as F

        def augment(x):
            return F.dropout(x, 0.1)
    """,
    "dropout_built_in_init": """
        import torch.nn as nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.drop = nn.Dropout(0.5)

            def forward(self, x):
                return self.drop(x)
    """,
    "lazy_init_under_a_guard": """
        import torch.nn as nn

        class Net(nn.Module):
            def forward(self, x):
                if self.drop is None:
                    self.drop = nn.Dropout(self.p)
                return self.drop(x)
    """,
    "rate_zero": """
        import torch.nn as nn
        import torch.nn.functional as F

        class Net(nn.Module):
            def forward(self, x):
                return F.dropout(x, 0.0)
    """,
    "kwargs_may_carry_training": """
        import torch.nn as nn
        import torch.nn.functional as F

        class Net(nn.Module):
            def forward(self, x, **kw):
                return F.dropout(x, **kw)
    """,
    "autograd_function_is_not_a_module": """
        import torch
        import torch.nn.functional as F

        class Drop(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return F.dropout(x, 0.5)
    """,
    "keras_layer": """
        import tensorflow as tf
        import torch.nn.functional as F

        class Block(tf.keras.layers.Layer):
            def call(self, x):
                return F.dropout(x, 0.5)
    """,
    "sdpa_rate_depends_on_mode": """
        import torch.nn.functional as F
        from torch import nn

        class CausalSelfAttention(nn.Module):
            def forward(self, q, k, v):
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0,
                                                   is_causal=True)
                p = self.attn_p if self.training else 0.0
                return F.scaled_dot_product_attention(q, k, v, dropout_p=p) + y
    """,
    "sdpa_without_dropout": """
        import torch.nn.functional as F
        from torch import nn

        class Attn(nn.Module):
            def forward(self, q, k, v):
                return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    """,
    "sdpa_rate_from_a_parameter": """
        import torch.nn.functional as F
        from torch import nn

        class Attn(nn.Module):
            def forward(self, q, k, v, dropout_p=0.0):
                return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    """,
    "static_method_cannot_see_the_mode": """
        import torch.nn as nn
        import torch.nn.functional as F

        class Net(nn.Module):
            @staticmethod
            def noise(x):
                return F.dropout(x, 0.1)
    """,
    "nn_dropout_in_init_helper": """
        import torch.nn as nn

        class Net(nn.Module):
            def _make_head(self, p):
                return nn.Sequential(nn.Linear(8, 8), nn.Dropout(p))
    """,
    "guarded_by_the_training_flag": """
        import torch.nn as nn
        import torch.nn.functional as F

        class EfficientNet(nn.Module):
            def forward(self, x):
                out = self.pool(self.layers(x))
                if self.training and self.dropout_rate > 0:
                    out = F.dropout(out, p=self.dropout_rate)
                out = F.dropout(out, 0.1) if self.training else out
                return self.linear(out)
    """,
    "training_only_method": """
        import pytorch_lightning as pl
        import torch.nn.functional as F

        class LitModel(pl.LightningModule):
            def training_step(self, batch, batch_idx):
                x, y = batch
                x = F.dropout(x, 0.1)  # input noise, training only
                return F.cross_entropy(self(x), y)
    """,
    "noise_dropout_in_a_no_grad_sampler": """
        import torch
        from torch import nn

        class LatentDiffusion(nn.Module):
            @torch.no_grad()
            def p_sample(self, x, t, noise_dropout=0.0):
                noise = torch.randn_like(x)
                if noise_dropout > 0.0:
                    noise = torch.nn.functional.dropout(noise, p=noise_dropout)
                return self.mean(x, t) + noise
    """,
}

test_bad, test_good = case_tests(C, BAD, GOOD)


def test_positive_examples_pass_the_prefilter():
    for name, text in BAD.items():
        assert [r.CODE for r in _rules_matching(src(text), C)] == C, name


def test_message_and_fix_kind():
    (d,) = lint(BAD["functional_dropout_in_forward"], C)
    assert d.name == "functional-dropout-always-on" and "training=self.training" in d.message
    assert d.fix is not None and d.fix.applicability.value == "unsafe"
    (d,) = lint(BAD["nn_dropout_built_in_forward"], C)
    assert d.fix is None


def test_fix_adds_training_flag():
    assert_fix_roundtrip(
        BAD["dropout2d_keyword_p_full_path"],
        C,
        """
        import torch
        from torch import nn

        class Encoder(nn.Module):
            def forward(self, x):
                x = self.conv(x)
                return torch.nn.functional.dropout2d(x, p=0.2, inplace=True, training=self.training)
        """,
    )


def test_fix_multi_line_call_keeps_layout():
    code = """
        import torch.nn.functional as F
        from torch import nn

        class Block(nn.Module):
            def forward(this, x):
                x = F.dropout(
                    x,
                    p=this.p,  # rate
                )
                return x
    """
    assert_fix_roundtrip(
        code,
        C,
        """
        import torch.nn.functional as F
        from torch import nn

        class Block(nn.Module):
            def forward(this, x):
                x = F.dropout(
                    x,
                    p=this.p,  # rate
                    training=this.training,
                )
                return x
        """,
    )


def test_fix_sdpa_rate():
    assert_fix_roundtrip(
        BAD["sdpa_constant_dropout"],
        C,
        BAD["sdpa_constant_dropout"].replace("dropout_p=self.dropout,  # expect: TL012",
                                             "dropout_p=self.dropout if self.training else 0.0,"),
    )


def test_fix_is_unsafe_only():
    _, applied = fix(BAD["functional_dropout_in_forward"], C, unsafe=False)
    assert applied == 0


def test_prefilter_needs_a_dropout_call_in_a_file_with_a_class():
    assert _rules_matching("# dropout is applied in the model\nx = 1\n", C) == []
    assert _rules_matching("class A:\n    p = 0.1  # dropout rate\n", C) == []
    assert _rules_matching("from torch.nn.functional import dropout as drop\nclass A:\n    pass\n", C) != []
