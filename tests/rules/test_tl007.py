"""TL007 activation-before-loss."""

import pytest
from helpers import assert_fix_roundtrip, case_tests, lint, src

from trainlint.engine import _rules_matching

C = ["TL007"]

BAD = {
    "softmax_into_cross_entropy": """
        import torch.nn.functional as F

        def training_step(model, batch):
            x, y = batch
            logits = model(x)
            loss = F.cross_entropy(F.softmax(logits, dim=1), y)  # expect: TL007
            return loss
    """,
    "classifier_of_this_module_ends_in_softmax": """
        import torch
        import torch.nn as nn

        class Classifier(nn.Module):
            def __init__(self, n_classes):
                super().__init__()
                self.features = nn.Sequential(nn.Conv2d(3, 64, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
                self.output_layer = nn.Sequential(nn.Linear(64, n_classes), nn.Softmax())

            def forward(self, img):
                feature_repr = self.features(img).flatten(1)
                label = self.output_layer(feature_repr)
                return label

        classifier = Classifier(10)
        task_loss = torch.nn.CrossEntropyLoss()

        for imgs, labels in dataloader:
            loss = task_loss(classifier(imgs), labels)  # expect: TL007
    """,
    "probabilities_through_a_local": """
        import torch
        import torch.nn as nn

        criterion = nn.CrossEntropyLoss()

        def train(model, loader, optimizer):
            for x, y in loader:
                out = model(x)
                probs = torch.softmax(out, dim=-1)
                loss = criterion(probs, y)  # expect: TL007
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    """,
    "sigmoid_into_bce_with_logits": """
        import torch
        import torch.nn as nn

        class Trainer:
            def __init__(self, model):
                self.model = model
                self.criterion = nn.BCEWithLogitsLoss()

            def step(self, x, y):
                pred = self.model(x).sigmoid()
                return self.criterion(pred, y.float())  # expect: TL007
    """,
    "softmax_into_nll_loss": """
        import torch.nn.functional as F

        def loss_fn(logits, target):
            return F.nll_loss(F.softmax(logits, dim=1), target)  # expect: TL007
    """,
    "softmax_module_attribute_into_criterion": """
        import torch.nn as nn

        class Head(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(512, 10)
                self.softmax = nn.Softmax(dim=1)
                self.loss = nn.CrossEntropyLoss(label_smoothing=0.1)

            def compute_loss(self, feats, y):
                return self.loss(self.softmax(self.fc(feats)), y)  # expect: TL007
    """,
    "lightning_module_forward_ends_in_softmax": """
        import torch
        import torch.nn.functional as F
        import pytorch_lightning as pl

        class LitModel(pl.LightningModule):
            def forward(self, x):
                return torch.softmax(self.net(x), dim=1)

            def training_step(self, batch, batch_idx):
                x, y = batch
                return F.cross_entropy(self(x), y)  # expect: TL007
    """,
    "tensorflow_softmax_into_with_logits": """
        import tensorflow as tf

        def loss(labels, logits):
            probs = tf.nn.softmax(logits)
            return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=probs))  # expect: TL007
    """,
    "keras_from_logits_on_softmax": """
        import tensorflow as tf

        loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

        def train_step(model, x, y):
            with tf.GradientTape() as tape:
                probs = tf.nn.softmax(model(x))
                loss = loss_fn(y, probs)  # expect: TL007
    """,
    "scico_softmax_before_the_criterion_of_its_class": """
        import torch
        import pytorch_lightning as pl

        class MulticlassCrossEncoder(pl.LightningModule):
            def __init__(self, num_classes):
                super().__init__()
                self.criterion = torch.nn.CrossEntropyLoss()

            def validation_step(self, batch, batch_idx):
                x, y = batch
                y_hat = self(x)
                y_hat = torch.softmax(y_hat, dim=1)
                loss = self.criterion(y_hat, y)  # expect: TL007
                self.log("val_loss", loss)

        class MultiLabelCrossEncoder(pl.LightningModule):
            def __init__(self):
                super().__init__()
                self.criterion = torch.nn.BCEWithLogitsLoss()

            def validation_step(self, batch, batch_idx):
                x, y = batch
                y_hat = self(x)
                loss = self.criterion(y_hat, y)
                y_hat = torch.sigmoid(y_hat)
                return loss
    """,
    "keras_sequential_softmax_compiled_from_logits": """
        from tensorflow import keras
        from tensorflow.keras import layers

        model = keras.Sequential([
            layers.Flatten(input_shape=(28, 28)),
            layers.Dense(128, activation="relu"),
            layers.Dense(10, activation="softmax"),
        ])
        model.compile(optimizer="adam",
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),  # expect: TL007
                      metrics=["accuracy"])
    """,
    "keras_added_sigmoid_and_a_named_loss": """
        import tensorflow as tf

        model = tf.keras.Sequential()
        model.add(tf.keras.layers.Dense(64, activation="relu"))
        model.add(tf.keras.layers.Dense(1, activation="sigmoid"))
        bce = tf.keras.losses.BinaryCrossentropy(from_logits=True)
        model.compile(optimizer="adam", loss=bce)  # expect: TL007
    """,
    "keras_functional_model": """
        from tensorflow import keras
        from tensorflow.keras import layers

        inputs = keras.Input(shape=(784,))
        x = layers.Dense(64, activation="relu")(inputs)
        outputs = layers.Dense(10, activation="softmax")(x)
        model = keras.Model(inputs=inputs, outputs=outputs)
        model.compile(loss=keras.losses.CategoricalCrossentropy(from_logits=True))  # expect: TL007
    """,
}

GOOD = {
    "logits_into_cross_entropy": """
        import torch.nn.functional as F

        def training_step(model, x, y):
            logits = model(x)
            probs = F.softmax(logits, dim=1)   # for logging
            loss = F.cross_entropy(logits, y)
            return loss, probs.max(1)
    """,
    "log_softmax_into_nll": """
        import torch.nn.functional as F

        def loss_fn(logits, y):
            return F.nll_loss(F.log_softmax(logits, dim=1), y)
    """,
    "log_softmax_into_cross_entropy_is_harmless": """
        import torch.nn.functional as F

        def loss_fn(logits, y):
            return F.cross_entropy(F.log_softmax(logits, dim=1), y)
    """,
    "soft_targets_are_probabilities": """
        import torch.nn.functional as F

        def distill(student_logits, teacher_logits, T=2.0):
            return F.cross_entropy(student_logits / T, F.softmax(teacher_logits / T, dim=1))
    """,
    "sigmoid_into_plain_bce": """
        import torch
        import torch.nn as nn

        criterion = nn.MSELoss()

        def loss(x, y):
            return criterion(torch.sigmoid(x), y)
    """,
    "model_softmax_only_at_inference": """
        import torch
        import torch.nn as nn
        import torch.nn.functional as F

        class Net(nn.Module):
            def forward(self, x):
                logits = self.fc(x)
                if not self.training:
                    return F.softmax(logits, dim=1)
                return logits

        model = Net()
        crit = nn.CrossEntropyLoss()

        def train(x, y):
            return crit(model(x), y)
    """,
    "rebound_before_the_loss": """
        import torch
        import torch.nn.functional as F

        def train(model, x, y, calibrate):
            out = torch.softmax(model(x), 1)
            if calibrate:
                out = model.head(x)
            return F.cross_entropy(out, y)
    """,
    "softmax_of_a_different_value_in_a_loop": """
        import torch
        import torch.nn.functional as F

        def train(model, loader):
            out = None
            for x, y in loader:
                if out is not None:
                    loss = F.cross_entropy(out, y)
                out = torch.softmax(model(x), 1)
    """,
    "keras_probabilities_without_from_logits": """
        import tensorflow as tf

        loss_fn = tf.keras.losses.SparseCategoricalCrossentropy()

        def train_step(model, x, y):
            probs = tf.nn.softmax(model(x))
            return loss_fn(y, probs)
    """,
    "keras_logits_model_from_logits": """
        from tensorflow import keras
        from tensorflow.keras import layers

        model = keras.Sequential([layers.Dense(128, activation="relu"), layers.Dense(10)])
        model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    """,
    "keras_softmax_model_probability_loss": """
        from tensorflow import keras
        from tensorflow.keras import layers

        model = keras.Sequential([layers.Dense(10, activation="softmax")])
        model.compile(loss=keras.losses.SparseCategoricalCrossentropy())
        model.compile(loss="sparse_categorical_crossentropy")
    """,
    "keras_softmax_removed_by_a_later_add": """
        from tensorflow import keras
        from tensorflow.keras import layers

        model = keras.Sequential([layers.Dense(10, activation="softmax")])
        model.add(layers.Dense(10))
        model.compile(loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    """,
    "unknown_criterion": """
        import torch

        def train(criterion, model, x, y):
            return criterion(torch.softmax(model(x), 1), y)
    """,
    "self_softmax_method_of_the_model": """
        import torch.nn as nn
        import torch.nn.functional as F

        class Net(nn.Module):
            def softmax(self, x, temperature):
                return x / temperature

            def loss(self, x, y):
                return F.cross_entropy(self.softmax(x, 2.0), y)
    """,
}


test_bad, test_good = case_tests(C, BAD, GOOD)


def test_fix_removes_an_inline_softmax():
    assert_fix_roundtrip(BAD["softmax_into_cross_entropy"], C, """
        import torch.nn.functional as F

        def training_step(model, batch):
            x, y = batch
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            return loss
    """)


def test_fix_nll_uses_log_softmax():
    assert_fix_roundtrip(BAD["softmax_into_nll_loss"], C, """
        import torch.nn.functional as F

        def loss_fn(logits, target):
            return F.nll_loss(F.log_softmax(logits, dim=1), target)
    """)


def test_fix_removes_a_softmax_module_call():
    fixed = assert_fix_roundtrip(BAD["softmax_module_attribute_into_criterion"], C)
    assert "return self.loss(self.fc(feats), y)" in fixed


def test_fix_multiline_keeps_layout():
    assert_fix_roundtrip("""
        import torch
        import torch.nn.functional as F

        def loss_fn(logits, y):
            return F.cross_entropy(
                torch.softmax(
                    logits.view(-1, logits.size(-1)),  # flatten the tokens
                    dim=-1,
                ),
                y.view(-1),
            )
    """, C, """
        import torch
        import torch.nn.functional as F

        def loss_fn(logits, y):
            return F.cross_entropy(
                logits.view(-1, logits.size(-1)),
                y.view(-1),
            )
    """)


def test_fix_tensor_method_sigmoid():
    fixed = assert_fix_roundtrip("""
        import torch.nn.functional as F

        def loss(x, y):
            return F.binary_cross_entropy_with_logits(x.sigmoid(), y)
    """, C)
    assert "F.binary_cross_entropy_with_logits(x, y)" in fixed


def test_no_fix_through_names_or_models():
    for name in ("probabilities_through_a_local", "classifier_of_this_module_ends_in_softmax",
                 "lightning_module_forward_ends_in_softmax"):
        (d,) = lint(BAD[name], C)
        assert d.fix is None, name


@pytest.mark.parametrize("name", BAD)
def test_positive_examples_pass_the_prefilter(name):
    assert [r.CODE for r in _rules_matching(src(BAD[name]), C)] == C


def test_fix_keras_sets_from_logits_false():
    fixed = assert_fix_roundtrip(BAD["keras_sequential_softmax_compiled_from_logits"], C)
    assert "loss=keras.losses.SparseCategoricalCrossentropy(from_logits=False)," in fixed


def test_no_fix_for_a_keras_loss_built_elsewhere():
    (d,) = lint(BAD["keras_added_sigmoid_and_a_named_loss"], C)
    assert d.fix is None
