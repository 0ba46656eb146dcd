"""TL001 missing-zero-grad: true positives (marked `# expect: TL001`) and near-misses."""

import pytest
from helpers import case_tests, assert_fix_roundtrip

C = ["TL001"]

BAD = {
    "no_clearing_at_all": """
        import torch
        model = Net()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for epoch in range(10):
            for x, y in loader:
                loss = criterion(model(x), y)
                loss.backward()
                optimizer.step()  # expect: TL001
    """,
    "cleared_once_before_the_loop": """
        from torch import optim
        opt = optim.Adam(net.parameters())
        opt.zero_grad()
        for batch in train_loader:
            out = net(batch["x"])
            loss = F.cross_entropy(out, batch["y"])
            loss.backward()
            opt.step()  # expect: TL001
    """,
    "cleared_per_epoch_stepped_per_batch": """
        for epoch in range(epochs):
            optimizer.zero_grad()
            for x, y in loader:
                loss = criterion(model(x), y)
                loss.backward()
                optimizer.step()  # expect: TL001
    """,
    "one_branch_clears_the_other_steps": """
        for x, y in loader:
            loss = criterion(model(x), y)
            if use_amp:
                optimizer.zero_grad()
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()  # expect: TL001
    """,
    "gan_generator_never_cleared": """
        import torch
        opt_g = torch.optim.Adam(G.parameters(), lr=2e-4)
        opt_d = torch.optim.Adam(D.parameters(), lr=2e-4)
        for real, _ in loader:
            opt_d.zero_grad()
            d_loss = D(real).mean() - D(G(noise()).detach()).mean()
            d_loss.backward()
            opt_d.step()
            g_loss = -D(G(noise())).mean()
            g_loss.backward()
            opt_g.step()  # expect: TL001
    """,
    "helper_with_backward_and_step": """
        def train_step(model, opt, batch):
            loss = model(batch).mean()
            loss.backward()
            opt.step()  # expect: TL001
            return loss.item()

        def fit(model, optimizer, loader, epochs):
            for epoch in range(epochs):
                for batch in loader:
                    train_step(model, optimizer, batch)
    """,
    "method_called_through_self": """
        import torch

        class Trainer:
            def __init__(self, model):
                self.model = model
                self.optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
                self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, 10)

            def training_step(self, batch):
                loss = self.model(batch)
                loss.backward()
                self.optimizer.step()  # expect: TL001
                self.scheduler.step()

            def fit(self, loader):
                for batch in loader:
                    self.training_step(batch)
    """,
    "cleared_between_backward_and_step": """
        for x, y in loader:
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.zero_grad()
            optimizer.step()  # expect: TL001
    """,
    "while_loop_with_alias_import": """
        from torch.optim import Adam as A
        o = A(model.parameters())
        step = 0
        while step < max_steps:
            with torch.autocast("cuda"):
                loss = model(next(it)).sum()
            loss.backward()
            o.step()  # expect: TL001
            step += 1
    """,
    "inside_try_and_if": """
        for i, batch in enumerate(loader):
            try:
                if batch is not None:
                    loss = model(batch)
                    loss.backward()
                    optimizer.step()  # expect: TL001
            except RuntimeError:
                continue
    """,
    "accumulation_cleared_every_micro_batch": """
        for step, (x, y) in enumerate(train_loader):
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(x), y)
            (loss / grad_accum_steps).backward()
            if step % grad_accum_steps == 0:
                if scaler is not None:
                    scaler.step(optimizer)  # expect: TL001
                    scaler.update()
                else:
                    optimizer.step()  # expect: TL001
    """,
    "accumulation_cleared_after_the_conditional_step": """
        for i, batch in enumerate(loader):
            loss = model(**batch).loss / accum
            loss.backward()
            if (i + 1) % accum == 0:
                opt.step()  # expect: TL001
            opt.zero_grad()
    """,
    "lightning_manual_accumulation_cleared_each_batch": """
        import pytorch_lightning as pl

        class VAE(pl.LightningModule):
            def training_step(self, batch, batch_idx):
                g_opt, d_opt = self.optimizers()
                loss = self.loss(self(batch), batch)
                g_opt.zero_grad()
                self.manual_backward(loss)
                if (batch_idx + 1) % self.accumulate_grad_batches == 0:
                    g_opt.step()  # expect: TL001
    """,
    "accelerate_module_zero_grad_inside_accumulate": """
        for batch in dataloader:
            with accelerator.accumulate(policy):
                loss = compute_loss(policy, batch)
                accelerator.backward(loss)
                optimizer.step()  # expect: TL001
                policy.zero_grad(set_to_none=True)
    """,
}

GOOD = {
    "wgan_generator_every_n_critic_steps": """
        for i, (imgs, _) in enumerate(dataloader):
            optimizer_D.zero_grad()
            fake_imgs = generator(z)
            d_loss = -torch.mean(discriminator(imgs)) + torch.mean(discriminator(fake_imgs))
            d_loss.backward()
            optimizer_D.step()
            optimizer_G.zero_grad()
            if i % opt.n_critic == 0:
                g_loss = -torch.mean(discriminator(generator(z)))
                g_loss.backward()
                optimizer_G.step()
    """,
    "zero_grad_at_loop_start": """
        for x, y in loader:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
    """,
    "zero_grad_at_loop_end": """
        for x, y in loader:
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    """,
    "gradient_accumulation": """
        for i, (x, y) in enumerate(loader):
            loss = criterion(model(x), y) / accum_steps
            loss.backward()
            if (i + 1) % accum_steps == 0:
                optimizer.step()
                optimizer.zero_grad()
    """,
    "accumulation_clear_at_window_start": """
        for i, (x, y) in enumerate(loader):
            if i % accum_steps == 0:
                optimizer.zero_grad()
            loss = criterion(model(x), y) / accum_steps
            loss.backward()
            if (i + 1) % accum_steps == 0:
                optimizer.step()
    """,
    "micro_batches_inner_loop": """
        for batch in loader:
            optimizer.zero_grad()
            for chunk in batch.split(8):
                (model(chunk).sum() / 4).backward()
            optimizer.step()
    """,
    "helper_clears": """
        def train_step(model, opt, batch):
            opt.zero_grad()
            loss = model(batch).mean()
            loss.backward()
            opt.step()

        def fit(model, optimizer, loader):
            for batch in loader:
                train_step(model, optimizer, batch)
    """,
    "lbfgs_closure": """
        import torch
        optimizer = torch.optim.LBFGS(model.parameters(), lr=1)
        for x, y in loader:
            def closure():
                optimizer.zero_grad()
                loss = criterion(model(x), y)
                loss.backward()
                return loss
            optimizer.step(closure)
    """,
    "lightning_training_step": """
        import pytorch_lightning as pl

        class Model(pl.LightningModule):
            def training_step(self, batch, batch_idx):
                x, y = batch
                loss = F.cross_entropy(self(x), y)
                return loss

            def configure_optimizers(self):
                return torch.optim.Adam(self.parameters())
    """,
    "deepspeed_engine_clears_in_step": """
        model_engine, optimizer, _, _ = deepspeed.initialize(model=model, model_parameters=params)
        for batch in loader:
            loss = model_engine(batch)
            model_engine.backward(loss)
            model_engine.step()
    """,
    "accelerate_accumulate": """
        for batch in loader:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
    """,
    "model_zero_grad": """
        for x, y in loader:
            model.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
    """,
    "grads_set_to_none_by_hand": """
        for x, y in loader:
            for p in model.parameters():
                p.grad = None
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
    """,
    "skip_non_finite_step": """
        for x, y in loader:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            if not torch.isfinite(loss):
                optimizer.zero_grad()
                continue
            optimizer.step()
    """,
    "opaque_helper_given_the_optimizer": """
        from mylib import reset_grads
        for x, y in loader:
            reset_grads(optimizer)
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
    """,
    "scheduler_step_is_not_an_optimizer": """
        for epoch in range(10):
            train_one_epoch()
            scheduler.step()
            lr_sched.step(val_loss)
    """,
    "frozen_params_grads_dropped_after_backward": """
        for x, y in loader:
            optimizer.zero_grad()
            criterion(model(x), y).backward()
            for p in frozen:
                p.grad = None
            optimizer.step()
    """,
    "both_gan_optimizers_cleared": """
        for real in loader:
            netD.zero_grad()
            errD = criterion(netD(real), ones)
            errD.backward()
            optimizerD.step()
            netG.zero_grad()
            errG = criterion(netD(netG(noise)), ones)
            errG.backward()
            optimizerG.step()
    """,
    "timm_accumulation_with_opaque_scaler": """
        def train_one_epoch(model, loader, optimizer, loss_fn, accum_steps, loss_scaler=None):
            optimizer.zero_grad()
            for i, (x, y) in enumerate(loader):
                need_update = (i + 1) % accum_steps == 0
                loss = loss_fn(model(x), y) / accum_steps
                if loss_scaler is not None:
                    loss_scaler(loss, optimizer, need_update=need_update)
                else:
                    loss.backward()
                    if need_update:
                        optimizer.step()
                if not need_update:
                    continue
                optimizer.zero_grad()
    """,
    "wrapper_clears_inner_optimizer": """
        def train(model, iterator, optimizer, criterion):
            for src, trg in iterator:
                optimizer.optimizer.zero_grad()
                loss = criterion(model(src), trg)
                loss.backward()
                optimizer.step()
    """,
    "no_backward_in_loop": """
        for epoch in range(10):
            optimizer.step()
    """,
    "accumulation_cleared_after_the_step": """
        for step, (x, y) in enumerate(train_loader):
            loss = criterion(model(x), y) / accum
            loss.backward()
            if (step + 1) % accum == 0:
                optimizer.step()
                optimizer.zero_grad()
    """,
    "periodic_step_with_its_own_backward": """
        for i, (x, y) in enumerate(loader):
            optimizer.zero_grad()
            if i % 2 == 0:
                loss = criterion(model(x), y)
                loss.backward()
                optimizer.step()
    """,
    "accelerate_optimizer_zero_grad_inside_accumulate": """
        for batch in dataloader:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
    """,
    "lightning_manual_optimisation_done_right": """
        import pytorch_lightning as pl

        class GAN(pl.LightningModule):
            def training_step(self, batch, batch_idx):
                opt = self.optimizers()
                loss = self.loss(self(batch), batch)
                self.manual_backward(loss / 4)
                if (batch_idx + 1) % 4 == 0:
                    opt.step()
                    opt.zero_grad()
    """,
}


test_bad, test_good = case_tests(C, BAD, GOOD)


def test_message_names_optimizer_and_remedy():
    from helpers import lint

    (d,) = lint(BAD["gan_generator_never_cleared"], C)
    assert "opt_g" in d.message and "sum of all gradients" in d.message
    assert d.name == "missing-zero-grad" and d.severity == "error"
    assert d.fix is not None and d.fix.applicability.value == "unsafe"
    assert "opt_g.zero_grad()" in d.fix.message  # the remedy: one sentence in the message, the how in the fix


def test_fix_inserts_zero_grad_at_loop_start():
    assert_fix_roundtrip(
        BAD["cleared_once_before_the_loop"],
        C,
        """
        from torch import optim
        opt = optim.Adam(net.parameters())
        opt.zero_grad()
        for batch in train_loader:
            opt.zero_grad()
            out = net(batch["x"])
            loss = F.cross_entropy(out, batch["y"])
            loss.backward()
            opt.step()
        """,
    )


def test_fix_moves_misplaced_zero_grad_before_backward():
    assert_fix_roundtrip(
        BAD["cleared_between_backward_and_step"],
        C,
        """
        for x, y in loader:
            loss = criterion(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        """,
    )


# Broken accumulation has no automatic fix: where the clear belongs depends on the intended accumulation.
NO_FIX = {"cleared_between_backward_and_step", "accumulation_cleared_every_micro_batch",
          "accumulation_cleared_after_the_conditional_step", "lightning_manual_accumulation_cleared_each_batch",
          "accelerate_module_zero_grad_inside_accumulate"}


@pytest.mark.parametrize("name", [n for n in BAD if n not in NO_FIX])
def test_every_fix_round_trips(name):
    assert_fix_roundtrip(BAD[name], C)


@pytest.mark.parametrize("name", sorted(NO_FIX - {"cleared_between_backward_and_step"}))
def test_broken_accumulation_is_reported_without_a_fix(name):
    from helpers import lint

    diags = lint(BAD[name], C)
    assert diags and all(d.fix is None for d in diags)


def test_fix_is_unsafe_and_not_applied_by_default():
    from helpers import fix

    text, applied = fix(BAD["no_clearing_at_all"], C, unsafe=False)
    assert applied == 0
