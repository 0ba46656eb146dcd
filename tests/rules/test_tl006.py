"""TL006 amp-clip-before-unscale."""

import pytest
from helpers import assert_fix_roundtrip, case_tests, lint, src

from trainlint.engine import _rules_matching

C = ["TL006"]

BAD = {
    "mingpt_ddp_trainer": """
        import torch

        class Trainer:
            def __init__(self, model, optimizer, config):
                self.model, self.optimizer, self.config = model, optimizer, config
                self.scaler = torch.amp.GradScaler("cuda")

            def _run_batch(self, source, targets, train=True):
                with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=self.config.use_amp):
                    _, loss = self.model(source, targets)
                if train:
                    self.optimizer.zero_grad(set_to_none=True)
                    if self.config.use_amp:
                        self.scaler.scale(loss).backward()
                        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_norm_clip)  # expect: TL006
                        self.scaler.step(self.optimizer)
                        self.scaler.update()
                    else:
                        loss.backward()
                        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_norm_clip)
                        self.optimizer.step()
                return loss.item()
    """,
    "conditional_clip": """
        import torch
        from torch.cuda.amp import GradScaler, autocast

        def train(model, loader, optimizer, args):
            scaler = GradScaler()
            for x, y in loader:
                with autocast():
                    loss = model(x, y)
                scaler.scale(loss).backward()
                if args.clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)  # expect: TL006
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad()
    """,
    "two_models_one_optimizer": """
        from torch.nn.utils import clip_grad_norm_

        def step(unet, text_encoder, optimizer, scaler, loss):
            scaler.scale(loss).backward()
            clip_grad_norm_(unet.parameters(), 1.0)  # expect: TL006
            clip_grad_norm_(text_encoder.parameters(), 1.0)  # expect: TL006
            scaler.step(optimizer)
            scaler.update()
    """,
    "clip_value": """
        import torch.nn as nn

        def step(model, optimizer, grad_scaler, loss):
            grad_scaler.scale(loss).backward()
            nn.utils.clip_grad_value_(model.parameters(), clip_value=0.5)  # expect: TL006
            grad_scaler.step(optimizer)
            grad_scaler.update()
    """,
    "backward_in_a_branch_clip_after_it": """
        import torch

        def train_step(model, optimizer, scaler, loss, max_norm):
            if scaler is not None:
                scaler.scale(loss).backward()
            else:
                loss.backward()
            total_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)  # expect: TL006
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            return total_norm
    """,
    "local_clipping_helper": """
        def clip_gradient(optimizer, grad_clip):
            for group in optimizer.param_groups:
                for param in group["params"]:
                    if param.grad is not None:
                        param.grad.data.clamp_(-grad_clip, grad_clip)

        def train(loader, model, criterion, optimizer, scaler):
            for images, targets in loader:
                loss = criterion(model(images), targets)
                optimizer.zero_grad()
                scaler.scale(loss).backward()
                clip_gradient(optimizer, 5.0)  # expect: TL006
                scaler.step(optimizer)
                scaler.update()
    """,
    "norm_logged_before_unscale": """
        def step(model, optimizer, scaler, loss, log):
            scaler.scale(loss).backward()
            norms = [p.grad.norm() for p in model.parameters() if p.grad is not None]  # expect: TL006
            log(max(norms))
            scaler.step(optimizer)
            scaler.update()
    """,
    "unscale_after_the_clip": """
        import torch

        def step(model, optimizer, scaler, loss):
            scaler.scale(loss).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # expect: TL006
            scaler.unscale_(optimizer)
            scaler.step(optimizer)
            scaler.update()
    """,
}

GOOD = {
    "unscale_first": """
        import torch

        def step(model, optimizer, grad_scaler, loss, gradient_clipping):
            grad_scaler.scale(loss).backward()
            grad_scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), gradient_clipping)
            grad_scaler.step(optimizer)
            grad_scaler.update()
    """,
    "conditional_unscale": """
        import torch

        def step(model, optimizer, scaler, loss, max_norm, amp):
            scaler.scale(loss).backward()
            if max_norm > 0:
                if amp:
                    scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
            scaler.step(optimizer)
            scaler.update()
    """,
    "amp_and_plain_branches": """
        import torch

        def step(model, optimizer, scaler, loss, args):
            if args.amp:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
                optimizer.step()
    """,
    "clip_in_the_plain_branch_only": """
        import torch

        def step(model, optimizer, scaler, loss, amp):
            if amp:
                scaler.scale(loss).backward()
            else:
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            if amp:
                scaler.step(optimizer)
    """,
    "no_grad_scaler": """
        import torch

        def step(model, optimizer, loss):
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
    """,
    "accelerate_clips_after_unscaling": """
        def step(accelerator, model, optimizer, scaler, loss):
            scaler.scale(loss).backward()
            accelerator.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
    """,
    "timm_native_scaler": """
        import torch
        from timm.utils import dispatch_clip_grad

        class NativeScaler:
            def __init__(self):
                self._scaler = torch.cuda.amp.GradScaler()

            def __call__(self, loss, optimizer, clip_grad=None, parameters=None, clip_mode="norm"):
                self._scaler.scale(loss).backward()
                if clip_grad is not None:
                    self._scaler.unscale_(optimizer)
                    dispatch_clip_grad(parameters, clip_grad, mode=clip_mode)
                self._scaler.step(optimizer)
                self._scaler.update()
    """,
    "clip_after_the_step": """
        import torch

        def step(model, optimizer, scaler, loss):
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    """,
    "disabled_scaler": """
        import torch

        scaler = torch.cuda.amp.GradScaler(enabled=False)

        def step(model, optimizer, loss):
            scaler.scale(loss).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
    """,
    "apex_scale_loss_unscales_on_exit": """
        import torch
        from apex import amp

        def step(model, optimizer, loss):
            with amp.scale_loss(loss, optimizer) as scaled_loss:
                scaled_loss.backward()
            torch.nn.utils.clip_grad_norm_(amp.master_params(optimizer), 1.0)
            optimizer.step()
    """,
    "helper_unscales_then_clips": """
        import torch

        def unscale_and_clip(scaler, optimizer, params, max_norm):
            scaler.unscale_(optimizer)
            return torch.nn.utils.clip_grad_norm_(params, max_norm)

        def step(model, optimizer, scaler, loss):
            scaler.scale(loss).backward()
            unscale_and_clip(scaler, optimizer, model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
    """,
    "gradient_accumulation_unscale_at_the_boundary": """
        import torch

        def train(model, loader, optimizer, scaler, accum):
            for i, (x, y) in enumerate(loader):
                loss = model(x, y) / accum
                scaler.scale(loss).backward()
                if (i + 1) % accum == 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad()
    """,
}


test_bad, test_good = case_tests(C, BAD, GOOD)


def test_fix_inserts_unscale_before_the_clip():
    assert_fix_roundtrip(BAD["conditional_clip"], C, """
        import torch
        from torch.cuda.amp import GradScaler, autocast

        def train(model, loader, optimizer, args):
            scaler = GradScaler()
            for x, y in loader:
                with autocast():
                    loss = model(x, y)
                scaler.scale(loss).backward()
                if args.clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad()
    """)


def test_fix_uses_the_steps_optimizer_and_scaler():
    fixed = assert_fix_roundtrip(BAD["mingpt_ddp_trainer"], C)
    assert ("self.scaler.scale(loss).backward()\n                self.scaler.unscale_(self.optimizer)\n"
            "                torch.nn.utils.clip_grad_norm_(") in fixed


def test_fix_once_for_two_clips_before_one_step():
    fixed = assert_fix_roundtrip(BAD["two_models_one_optimizer"], C)
    assert fixed.count("scaler.unscale_(optimizer)") == 1
    assert fixed.index("scaler.unscale_(optimizer)") < fixed.index("clip_grad_norm_(unet")


def test_fix_multiline_clip_call():
    fixed = assert_fix_roundtrip("""
        import torch

        def step(model, optimizer, scaler, loss):
            scaler.scale(loss).backward()
            torch.nn.utils.clip_grad_norm_(
                model.parameters(),
                max_norm=1.0,
            )
            scaler.step(optimizer)
    """, C)
    assert "    scaler.unscale_(optimizer)\n    torch.nn.utils.clip_grad_norm_(\n        model.parameters(),\n" in fixed


def test_no_fix_when_unscale_follows_the_clip():
    (d,) = lint(BAD["unscale_after_the_clip"], C)
    assert d.fix is None


def test_norm_read_is_a_warning_without_fix():
    (d,) = lint(BAD["norm_logged_before_unscale"], C)
    assert d.severity == "warning" and d.fix is None


def test_message_names_scaler_and_optimizer():
    (d,) = lint(BAD["mingpt_ddp_trainer"], C)
    assert "`self.scaler.unscale_(self.optimizer)`" in d.message


@pytest.mark.parametrize("name", BAD)
def test_positive_examples_pass_the_prefilter(name):
    assert [r.CODE for r in _rules_matching(src(BAD[name]), C)] == C
