"""TL003 double-loss-reduction."""

import pytest
from helpers import case_tests, assert_fix_roundtrip, found

C = ["TL003"]

BAD = {
    "criterion_module_divided_by_size": """
        import torch.nn as nn
        criterion = nn.CrossEntropyLoss()
        for x, y in loader:
            loss = criterion(model(x), y) / x.size(0)  # expect: TL003
            loss.backward()
    """,
    "functional_divided_by_configured_batch_size": """
        import torch.nn.functional as F

        def step(model, x, y, batch_size):
            out = model(x)
            loss = F.mse_loss(out, y) / batch_size  # expect: TL003
            return loss
    """,
    "self_criterion_divided_by_len": """
        import torch

        class Trainer:
            def __init__(self):
                self.criterion = torch.nn.BCEWithLogitsLoss(reduction="mean")

            def step(self, images, labels):
                logits = self.model(images)
                loss = self.criterion(logits, labels) / len(images)  # expect: TL003
                return loss
    """,
    "explicit_mean_divided_by_shape": """
        def loss_fn(pred, target):
            err = ((pred - target) ** 2).mean()
            return err / pred.shape[0]  # expect: TL003
    """,
    "augmented_division": """
        import torch.nn.functional as F
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            loss /= x.size(0)  # expect: TL003
            loss.backward()
    """,
    "reassigned_in_place": """
        import torch.nn as nn
        criterion = nn.CTCLoss()

        def step(model, inputs, targets, in_lens, tgt_lens):
            loss = criterion(model(inputs), targets, in_lens, tgt_lens)
            loss = loss / inputs.size(0)  # expect: TL003
            return loss
    """,
    "reciprocal_multiplication": """
        from torch.nn import functional as F
        for batch in loader:
            loss = F.nll_loss(model(batch.x), batch.y) * (1.0 / batch.x.size(0))  # expect: TL003
            loss.backward()
    """,
    "args_batch_size": """
        import torch.nn as nn
        ce = nn.CrossEntropyLoss()

        def train(args, model, loader):
            for x, y in loader:
                loss = ce(model(x), y) / args.batch_size  # expect: TL003
                loss.backward()
    """,
    "keras_ssd_style": """
        import tensorflow as tf

        class SSDLoss:
            def compute_loss(self, y_true, y_pred):
                positives = tf.to_float(tf.reduce_max(y_true[:, :, 1:-12], axis=-1))
                n_positive = tf.reduce_sum(positives)
                class_loss = tf.reduce_sum(self.log_loss(y_true, y_pred) * positives, axis=-1)
                loc_loss = tf.reduce_sum(self.smooth_l1(y_true, y_pred) * positives, axis=-1)
                total_loss = (class_loss + self.alpha * loc_loss) / tf.maximum(1.0, n_positive)  # expect: TL003
                return total_loss

        ssd_loss = SSDLoss()
        model.compile(optimizer="adam", loss=ssd_loss.compute_loss)
    """,
    "keras_function_k_sum": """
        from keras import backend as K

        def normalised_loss(y_true, y_pred):
            per_sample = K.sum(K.square(y_true - y_pred), axis=-1)
            return per_sample / K.sum(y_true)  # expect: TL003

        model.compile("adam", loss=normalised_loss)
    """,
    "legacy_size_average_then_divided_by_unpacked_batch": """
        import torch.nn as nn

        class SegmentationLosses(object):
            def __init__(self, weight=None, size_average=True, batch_average=True, cuda=False):
                self.weight = weight
                self.size_average = size_average
                self.batch_average = batch_average
                self.cuda = cuda

            def CrossEntropyLoss(self, logit, target):
                n, c, h, w = logit.size()
                criterion = nn.CrossEntropyLoss(weight=self.weight, size_average=self.size_average)
                if self.cuda:
                    criterion = criterion.cuda()
                loss = criterion(logit, target.long())
                if self.batch_average:
                    loss /= n  # expect: TL003
                return loss
    """,
    "focal_term_of_a_mean_divided_by_the_batch": """
        import torch
        import torch.nn as nn

        def focal_loss(logit, target, gamma=2, alpha=0.5):
            n, c, h, w = logit.shape
            criterion = nn.CrossEntropyLoss()
            logpt = -criterion(logit, target)
            pt = torch.exp(logpt)
            if alpha is not None:
                logpt *= alpha
            loss = -((1 - pt) ** gamma) * logpt
            loss /= n  # expect: TL003
            return loss
    """,
    "side_output_losses_summed_then_divided": """
        import torch

        def weighted_bce(pred, target):
            b, c, h, w = target.shape
            return torch.sum(F.binary_cross_entropy_with_logits(pred, target, reduction="none")) / b

        def train_one_epoch(loader, model, criterion, optimizer):
            for images, labels in loader:
                preds_list = model(images)
                loss = sum([criterion(preds, labels) for preds in preds_list])
                loss /= images.shape[0]  # expect: TL003
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

        def main():
            train_one_epoch(loader, model, weighted_bce, optimizer)
    """,
}

GOOD = {
    "sum_divided_by_batch": """
        import torch.nn as nn
        crit = nn.MSELoss(reduction="sum")
        for x, y in loader:
            loss = crit(model(x), y) / x.size(0)
    """,
    "none_then_sum_divided": """
        import torch.nn.functional as F
        for x, y in loader:
            loss = F.cross_entropy(model(x), y, reduction="none").sum() / len(x)
    """,
    "divided_by_accumulation_steps": """
        import torch.nn.functional as F
        for i, (x, y) in enumerate(loader):
            loss = F.cross_entropy(model(x), y) / accum_steps
            loss.backward()
    """,
    "sum_divided_by_token_count": """
        import torch.nn.functional as F
        loss = F.cross_entropy(logits, targets, reduction="sum", ignore_index=-100) / num_tokens
    """,
    "logging_running_average": """
        running = 0.0
        for x, y in loader:
            loss = criterion(model(x), y)
            running += loss.item()
        epoch_loss = running / len(loader)
    """,
    "item_divided": """
        import torch.nn.functional as F
        value = F.mse_loss(out, y).item() / x.size(0)
    """,
    "keras_scalar_loss": """
        import tensorflow as tf

        def my_loss(y_true, y_pred):
            return tf.reduce_sum(tf.square(y_true - y_pred)) / tf.reduce_sum(tf.ones_like(y_true))

        model.compile(optimizer="adam", loss=my_loss)
    """,
    "keras_undone_by_batch_multiplication": """
        import tensorflow as tf

        def ssd_loss(y_true, y_pred):
            batch_size = tf.shape(y_pred)[0]
            per = tf.reduce_sum(tf.abs(y_true - y_pred), axis=-1)
            total = per / tf.maximum(1.0, tf.reduce_sum(y_true))
            total = total * tf.to_float(batch_size)
            return total

        model.compile(optimizer="adam", loss=ssd_loss)
    """,
    "mean_over_dim_not_batch": """
        def f(pred, target):
            return ((pred - target) ** 2).mean(dim=1) / pred.size(0)
    """,
    "legacy_size_average_false_is_a_sum": """
        import torch.nn as nn

        def seg_loss(logit, target):
            n, c, h, w = logit.size()
            criterion = nn.CrossEntropyLoss(size_average=False)
            loss = criterion(logit, target)
            loss /= n
            return loss
    """,
    "division_guarded_by_the_reduction_flag": """
        import torch.nn as nn

        class SegmentationLosses(object):
            def __init__(self, size_average=True, batch_average=True):
                self.size_average = size_average
                self.batch_average = batch_average

            def CrossEntropyLoss(self, logit, target):
                n, c, h, w = logit.size()
                criterion = nn.CrossEntropyLoss(size_average=self.size_average)
                loss = criterion(logit, target.long())
                if self.batch_average and not self.size_average:
                    loss /= n
                return loss
    """,
    "per_image_sum_divided_once": """
        import torch

        def weighted_bce(pred, target):
            return torch.sum(F.binary_cross_entropy_with_logits(pred, target, reduction="none"))

        def train_one_epoch(loader, model, criterion, optimizer):
            for images, labels in loader:
                loss = sum([criterion(p, labels) for p in model(images)]) / images.shape[0]
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

        def main():
            train_one_epoch(loader, model, weighted_bce, optimizer)
    """,
    "mean_of_a_mean_over_accumulation_steps": """
        def step(criterion, x, y, train_iter_size):
            loss = criterion(x, y) / train_iter_size
            return loss
    """,
}


test_bad, test_good = case_tests(C, BAD, GOOD)


def test_fix_removes_division():
    assert_fix_roundtrip(BAD["criterion_module_divided_by_size"], C, """
        import torch.nn as nn
        criterion = nn.CrossEntropyLoss()
        for x, y in loader:
            loss = criterion(model(x), y)
            loss.backward()
    """)


def test_fix_removes_augmented_division_line():
    fixed = assert_fix_roundtrip(BAD["augmented_division"], C)
    assert "/=" not in fixed


@pytest.mark.parametrize("name", [n for n in BAD if not n.startswith("keras")])
def test_every_fix_round_trips(name):
    assert_fix_roundtrip(BAD[name], C)


def test_keras_has_no_automatic_fix():
    from helpers import lint

    (d,) = lint(BAD["keras_ssd_style"], C)
    assert d.fix is None and "batch" in d.message


def test_batch_size_names_option():
    from helpers import options

    code = """
        import torch.nn.functional as F
        loss = F.mse_loss(out, y) / mb
    """
    assert found(code, C) == set()
    assert found(code, C, options(TL003={"batch-size-names": ["mb"]})) == {(2, "TL003")}


def test_recursive_loss_helpers_terminate():
    from helpers import found

    code = """
        def total(xs):
            if not xs:
                return 0
            return sum([total(x) for x in xs]) / len(xs)

        def loss_of(model, batch):
            return helper(model, batch) / batch.size(0)

        def helper(model, batch):
            return loss_of(model, batch)
    """
    assert found(code, ["TL003"]) == set()


KERAS_TAPE = """
    import tensorflow as tf

    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True{reduction})
    for x, y in dataset:
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = loss_fn(y, logits) / tf.cast(tf.shape(x)[0], tf.float32){marker}
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
"""


def test_keras_loss_object_in_a_gradient_tape_loop_divided_by_the_batch():
    from helpers import expected, found

    code = KERAS_TAPE.format(reduction="", marker="  # expect: TL003")
    assert found(code, C) == expected(code, C) != set()


@pytest.mark.parametrize("reduction", [", reduction=tf.keras.losses.Reduction.SUM", ', reduction="sum"',
                                       ', reduction="none"'])
def test_keras_sum_or_per_sample_losses_divided_once(reduction):
    from helpers import found

    assert found(KERAS_TAPE.format(reduction=reduction, marker=""), C) == set()


def test_keras_distributed_idiom_sum_over_global_batch():
    from helpers import found

    code = """
        import tensorflow as tf
        loss_obj = tf.keras.losses.CategoricalCrossentropy(reduction=tf.keras.losses.Reduction.NONE)

        def compute_loss(labels, predictions):
            per_example_loss = loss_obj(labels, predictions)
            return tf.reduce_sum(per_example_loss) * (1.0 / GLOBAL_BATCH_SIZE)
    """
    assert found(code, C) == set()


def test_len_of_a_list_the_code_builds_is_not_the_batch():
    from helpers import found

    code = """
        import torch
        import torch.nn.functional as F

        def jsd(output, target, num_splits=3, alpha=12):
            logits_split = torch.split(output, output.shape[0] // num_splits)
            loss = F.cross_entropy(logits_split[0], target)
            probs = [F.softmax(logits, dim=1) for logits in logits_split]
            logp_mixture = torch.clamp(torch.stack(probs).mean(axis=0), 1e-7, 1).log()
            loss += alpha * sum([F.kl_div(logp_mixture, p, reduction="batchmean") for p in probs]) / len(probs)
            return loss
    """
    assert found(code, ["TL003"]) == set()
