"""TL015 scheduler-before-optimizer: true positives (marked `# expect: TL015`) and near-misses."""

from helpers import assert_fix_roundtrip, case_tests, fix, lint, src

from trainlint.engine import _rules_matching

C = ["TL015"]

BAD = {
    "epoch_scheduler_at_top_of_epoch": """
        import torch
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[30, 60])
        for epoch in range(90):
            scheduler.step()  # expect: TL015
            for x, y in train_loader:
                optimizer.zero_grad()
                criterion(model(x), y).backward()
                optimizer.step()
    """,
    "per_batch_warmup_before_step": """
        from transformers import get_linear_schedule_with_warmup
        lr_scheduler = get_linear_schedule_with_warmup(optimizer, 100, 1000)
        for batch in loader:
            lr_scheduler.step()  # expect: TL015
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    """,
    "training_in_a_helper_function": """
        from torch.optim.lr_scheduler import StepLR

        def train(model, loader, opt):
            model.train()
            for x, y in loader:
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()

        def main():
            optimizer = torch.optim.Adam(model.parameters())
            scheduler = StepLR(optimizer, step_size=10)
            for epoch in range(1, args.epochs + 1):
                scheduler.step()  # expect: TL015
                train(model, train_loader, optimizer)
                test(model, test_loader)
    """,
    "trainer_class_methods": """
        import torch

        class Trainer:
            def __init__(self, model):
                self.optimizer = torch.optim.AdamW(model.parameters())
                self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=100)

            def train_epoch(self):
                for batch in self.loader:
                    self.optimizer.zero_grad()
                    self.model(batch).backward()
                    self.optimizer.step()

            def fit(self):
                for epoch in range(self.epochs):
                    self.scheduler.step()  # expect: TL015
                    self.train_epoch()
    """,
    "amp_scaler_step": """
        import torch
        sched = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=1000)
        for it, batch in enumerate(loader):
            sched.step()  # expect: TL015
            with torch.autocast("cuda"):
                loss = model(batch)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
    """,
    "parameter_built_elsewhere_in_the_file": """
        from diffusers.optimization import get_scheduler

        def train_inversion(unet, text_encoder, dataloader, optimizer, lr_scheduler):
            for epoch in range(10):
                for batch in dataloader:
                    lr_scheduler.step()  # expect: TL015
                    loss = loss_step(batch, unet, text_encoder)
                    loss.backward()
                    optimizer.step()
                    optimizer.zero_grad()

        def main():
            lr_scheduler = get_scheduler("constant", optimizer=optimizer, num_warmup_steps=0)
            train_inversion(unet, text_encoder, dataloader, optimizer, lr_scheduler)
    """,
    "local_subclass_keeping_torch_step": """
        from torch.optim.lr_scheduler import LRScheduler

        class WarmupLR(LRScheduler):
            def get_lr(self):
                return [lr * min(1.0, (self.last_epoch + 1) / 100) for lr in self.base_lrs]

        scheduler = WarmupLR(optimizer)
        for batch in loader:
            scheduler.step()  # expect: TL015
            model(batch).backward()
            optimizer.step()
    """,
}

GOOD = {
    "scheduler_after_optimizer": """
        for epoch in range(90):
            for x, y in train_loader:
                optimizer.zero_grad()
                criterion(model(x), y).backward()
                optimizer.step()
            scheduler.step()
    """,
    "per_batch_scheduler_after_step": """
        for batch in loader:
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()
    """,
    "guarded_on_the_first_epoch": """
        for epoch in range(start, epochs):
            if epoch > 0:
                scheduler.step()
            train_one_epoch(model, optimizer)
            for x, y in loader:
                loss = crit(model(x), y)
                loss.backward()
                optimizer.step()
    """,
    "plateau_scheduler_takes_the_metric": """
        import torch
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)
        for epoch in range(10):
            scheduler.step(val_loss)
            for x, y in loader:
                crit(model(x), y).backward()
                optimizer.step()
    """,
    "explicit_epoch_argument": """
        for epoch in range(10):
            lr_scheduler.step(epoch)
            for x, y in loader:
                crit(model(x), y).backward()
                optimizer.step()
    """,
    "timm_scheduler": """
        from timm.scheduler import create_scheduler
        lr_scheduler, _ = create_scheduler(args, optimizer)
        for epoch in range(10):
            for x, y in loader:
                crit(model(x), y).backward()
                optimizer.step()
                lr_scheduler.step_update(num_updates)
            lr_scheduler.step(epoch + 1)
    """,
    "different_branches": """
        for batch in loader:
            if warmup:
                scheduler.step()
            else:
                loss = model(batch)
                loss.backward()
                optimizer.step()
    """,
    "scheduler_of_another_optimizer": """
        import torch
        sched_d = torch.optim.lr_scheduler.StepLR(opt_d, 10)
        for real in loader:
            opt_d.zero_grad()
            d_loss(real).backward()
            opt_d.step()
            sched_d.step()
            opt_g.zero_grad()
            g_loss().backward()
            opt_g.step()
    """,
    "no_optimizer_step_in_the_loop": """
        for epoch in range(10):
            scheduler.step()
            log(scheduler.get_last_lr())
    """,
    "step_called_on_something_else": """
        for batch in loader:
            progress.step()
            env.step(action)
            loss.backward()
            optimizer.step()
    """,
    "project_scheduler_that_reads_the_optimizer_step": """
        from schedulers import PolyWarmUpScheduler

        lr_scheduler = PolyWarmUpScheduler(optimizer, warmup=0.01, total_steps=1000)

        def take_optimizer_step(lr_scheduler, optimizer, grad_scaler):
            lr_scheduler.step()
            grad_scaler.step(optimizer)
            grad_scaler.update()

        for batch in loader:
            model(batch).backward()
            take_optimizer_step(lr_scheduler, optimizer, grad_scaler)
    """,
    "scheduler_of_unknown_origin": """
        def fit(model, loader, optimizer, scheduler):
            for batch in loader:
                scheduler.step()
                model(batch).backward()
                optimizer.step()
    """,
    "local_scheduler_with_its_own_step": """
        from torch.optim.lr_scheduler import _LRScheduler

        class WarmupLR(_LRScheduler):
            def step(self, epoch=None):
                self.last_epoch = self.optimizer.state_dict()["state"].get(0, {}).get("step", 0) + 1

        scheduler = WarmupLR(optimizer)
        for batch in loader:
            scheduler.step()
            model(batch).backward()
            optimizer.step()
    """,
    "list_of_schedulers_in_a_test": """
        for _i in range(200):
            for scheduler in schedulers:
                if isinstance(scheduler, PlateauLRScheduler):
                    scheduler.step(fn())
                else:
                    scheduler.step()
            optimizer.step(fn)
    """,
}

test_bad, test_good = case_tests(C, BAD, GOOD)


def test_positive_examples_pass_the_prefilter():
    for name, text in BAD.items():
        assert [r.CODE for r in _rules_matching(src(text), C)] == C, name


def test_message_and_severity():
    (d,) = lint(BAD["epoch_scheduler_at_top_of_epoch"], C)
    assert d.name == "scheduler-before-optimizer" and d.severity == "warning"
    assert "scheduler.step()" in d.message and "optimizer.step()" in d.message
    assert d.fix is not None and d.fix.applicability.value == "unsafe"


def test_fix_moves_the_scheduler_after_the_inner_loop():
    assert_fix_roundtrip(
        BAD["epoch_scheduler_at_top_of_epoch"],
        C,
        """
        import torch
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[30, 60])
        for epoch in range(90):
            for x, y in train_loader:
                optimizer.zero_grad()
                criterion(model(x), y).backward()
                optimizer.step()
            scheduler.step()
        """,
    )


def test_fix_moves_the_scheduler_after_the_step_line():
    assert_fix_roundtrip(
        BAD["per_batch_warmup_before_step"],
        C,
        """
        from transformers import get_linear_schedule_with_warmup
        lr_scheduler = get_linear_schedule_with_warmup(optimizer, 100, 1000)
        for batch in loader:
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()
        """,
    )


def test_fix_after_a_multi_line_training_call_at_the_end_of_the_loop():
    code = """
        def train(model, loader, opt):
            for x, y in loader:
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()

        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 30)
        for epoch in range(1, args.epochs + 1):
            scheduler.step()  # expect: TL015
            train(
                model,
                train_loader,
                optimizer,
            )  # one epoch
        print("done")
    """
    assert [d.location.row for d in lint(code, C)] == [9]
    assert_fix_roundtrip(
        code,
        C,
        """
        def train(model, loader, opt):
            for x, y in loader:
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()

        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 30)
        for epoch in range(1, args.epochs + 1):
            train(
                model,
                train_loader,
                optimizer,
            )  # one epoch
            scheduler.step()
        print("done")
        """,
    )


def test_fix_inside_the_inner_loop_of_an_epoch_loop():
    fixed = assert_fix_roundtrip(BAD["parameter_built_elsewhere_in_the_file"], C)
    assert "optimizer.step()\n            lr_scheduler.step()\n            optimizer.zero_grad()" in fixed


def test_fix_is_unsafe_only():
    _, applied = fix(BAD["amp_scaler_step"], C, unsafe=False)
    assert applied == 0


def test_prefilter_needs_a_known_scheduler_and_an_argument_less_step():
    assert _rules_matching("sched.step(epoch)\nfrom torch.optim import lr_scheduler\n", C) == []
    assert _rules_matching("env.step()\nopt.step()\n", C) == []
    assert _rules_matching("s = lr_scheduler.StepLR(opt, 3)\ns.step()\n", C) != []
