"""TL016 anomaly-detection-left-on: true positives (marked `# expect: TL016`) and near-misses."""

from helpers import assert_fix_roundtrip, case_tests, fix, lint, src

from trainlint.engine import _rules_matching, lint_text

C = ["TL016"]

BAD = {
    "module_level_in_a_script": """
        import torch

        torch.autograd.set_detect_anomaly(True)  # expect: TL016

        def main():
            for x, y in loader:
                loss = criterion(model(x), y)
                loss.backward()
    """,
    "inside_main_guard_and_function": """
        from torch.autograd import set_detect_anomaly

        def train(args):
            set_detect_anomaly(mode=True)  # expect: TL016
            trainer.fit(model)

        if __name__ == "__main__":
            train(parse_args())
    """,
    "context_manager_around_backward": """
        import torch

        for batch in loader:
            with torch.autograd.detect_anomaly():  # expect: TL016
                loss = model(batch)
                loss.backward()
            optimizer.step()
    """,
    "decorator": """
        import torch

        @torch.autograd.detect_anomaly()  # expect: TL016
        def training_step(model, batch):
            return model(batch).sum().backward()
    """,
    "lightning_trainer": """
        import pytorch_lightning as pl

        trainer = pl.Trainer(
            max_epochs=10,
            detect_anomaly=True,  # expect: TL016
            precision=16,
        )
        trainer.fit(model, datamodule=dm)
    """,
    "lightning_2_trainer": """
        from lightning.pytorch import Trainer

        trainer = Trainer(accelerator="gpu", detect_anomaly=True)  # expect: TL016
    """,
}

GOOD = {
    "behind_a_debug_flag": """
        import torch

        if args.debug:
            torch.autograd.set_detect_anomaly(True)

        def main(cfg):
            if cfg.detect_anomaly:
                with torch.autograd.detect_anomaly():
                    train(cfg)
            else:
                train(cfg)
    """,
    "value_from_configuration": """
        import torch

        torch.autograd.set_detect_anomaly(args.detect_anomaly)
        trainer = pl.Trainer(detect_anomaly=cfg.debug)
    """,
    "switched_off": """
        import torch

        torch.autograd.set_detect_anomaly(False)
        trainer = pl.Trainer(detect_anomaly=False)
    """,
    "debug_window_switched_off_again": """
        import torch

        def find_nan(model, batch):
            torch.autograd.set_detect_anomaly(True)
            model(batch).sum().backward()
            torch.autograd.set_detect_anomaly(False)
    """,
    "conditional_expression": """
        import torch

        ctx = torch.autograd.detect_anomaly() if debug else contextlib.nullcontext()
    """,
    "other_trainer_keyword": """
        from transformers import Trainer

        trainer = Trainer(model=model, args=training_args)
    """,
    "debug_helper_function": """
        import torch

        def inner_fn_with_anomaly(primals, tangents):
            with torch.autograd.detect_anomaly(check_nan=False):
                return inner_fn(primals, tangents)

        def numeric_check_if_enabled(gm, inputs):
            with torch.autograd.set_detect_anomaly(True):
                run_model(gm, inputs)

        for x in loader:
            model(x).sum().backward()
    """,
    "library_function_in_a_file_that_does_not_train": """
        import torch

        def run_joint(fn, args):
            with torch.autograd.detect_anomaly():
                return fn(*args)
    """,
    "context_manager_implementation": """
        import torch

        class detect_anomaly:
            def __enter__(self):
                torch.set_anomaly_enabled(True, self.check_nan)
    """,
    "only_mentioned": """
        import torch

        # torch.autograd.set_detect_anomaly(True) helps finding NaNs
        enabled = torch.is_anomaly_enabled()
    """,
}

test_bad, test_good = case_tests(C, BAD, GOOD)


def test_positive_examples_pass_the_prefilter():
    for name, text in BAD.items():
        assert [r.CODE for r in _rules_matching(src(text), C)] == C, name


def test_test_files_are_left_alone():
    text = src(BAD["module_level_in_a_script"])
    for name in ("tests/test_train.py", "test_model.py", "pkg/tests/helpers.py", "model_test.py"):
        assert lint_text(text, name, C, {}).diagnostics == [], name
    assert lint_text(text, "scripts/train.py", C, {}).diagnostics


def test_message_and_severity():
    (d,) = lint(BAD["module_level_in_a_script"], C)
    assert d.name == "anomaly-detection-left-on" and d.severity == "warning"
    assert "slower" in d.message and d.fix is not None and d.fix.applicability.value == "unsafe"
    (d,) = lint(BAD["context_manager_around_backward"], C)
    assert d.fix is None


def test_fix_removes_the_call():
    assert_fix_roundtrip(
        BAD["module_level_in_a_script"],
        C,
        """
        import torch


        def main():
            for x, y in loader:
                loss = criterion(model(x), y)
                loss.backward()
        """,
    )


def test_fix_removes_a_multi_line_call():
    assert_fix_roundtrip(
        """
        import torch

        def main():
            torch.autograd.set_detect_anomaly(
                True,
            )
            model(x).sum().backward()
        """,
        C,
        """
        import torch

        def main():
            model(x).sum().backward()
        """,
    )


def test_fix_lightning_sets_false():
    assert_fix_roundtrip(
        BAD["lightning_trainer"],
        C,
        """
        import pytorch_lightning as pl

        trainer = pl.Trainer(
            max_epochs=10,
            detect_anomaly=False,
            precision=16,
        )
        trainer.fit(model, datamodule=dm)
        """,
    )


def test_no_fix_when_it_is_the_only_statement():
    (d,) = lint("""
        import torch

        def setup():
            torch.autograd.set_detect_anomaly(True)

        def step(loss):
            loss.backward()
    """, C)
    assert d.fix is None


def test_fix_is_unsafe_only():
    _, applied = fix(BAD["module_level_in_a_script"], C, unsafe=False)
    assert applied == 0
