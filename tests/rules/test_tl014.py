"""TL014 distributed-sampler-without-set-epoch: true positives (marked `# expect: TL014`) and near-misses."""

from helpers import assert_fix_roundtrip, case_tests, fix, lint, src

from trainlint.engine import _rules_matching

C = ["TL014"]

BAD = {
    "ddp_script": """
        import torch
        from torch.utils.data import DataLoader
        from torch.utils.data.distributed import DistributedSampler

        def main(rank, world_size):
            dataset = MyDataset()
            sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank)  # expect: TL014
            loader = DataLoader(dataset, batch_size=32, sampler=sampler, num_workers=4)
            for epoch in range(100):
                for x, y in loader:
                    optimizer.zero_grad()
                    loss_fn(model(x), y).backward()
                    optimizer.step()
    """,
    "inline_sampler_and_train_helper": """
        import torch.utils.data as data

        def train_one_epoch(model, loader, optimizer):
            for batch in loader:
                optimizer.zero_grad()
                model(batch).backward()
                optimizer.step()

        def main(args):
            train_loader = data.DataLoader(
                train_set,
                batch_size=args.batch_size,
                sampler=data.distributed.DistributedSampler(train_set),  # expect: TL014
            )
            for epoch in range(args.epochs):
                train_one_epoch(model, train_loader, optimizer)
    """,
    "conditional_sampler_imagenet_style": """
        import torch

        def main_worker(gpu, args):
            train_sampler = torch.utils.data.distributed.DistributedSampler(train_dataset) if args.distributed else None  # expect: TL014
            train_loader = torch.utils.data.DataLoader(
                train_dataset, batch_size=args.batch_size, shuffle=(train_sampler is None),
                sampler=train_sampler)
            val_loader = torch.utils.data.DataLoader(val_dataset, batch_size=args.batch_size)
            for epoch in range(args.start_epoch, args.epochs):
                adjust_learning_rate(optimizer, epoch, args)
                engine.train(train_loader, model, criterion, optimizer, epoch)
                validate(val_loader, model, criterion)
    """,
    "trainer_class": """
        from torch.utils.data import DataLoader, DistributedSampler

        class Trainer:
            def __init__(self, dataset):
                self.sampler = DistributedSampler(dataset, shuffle=True)  # expect: TL014
                self.train_loader = DataLoader(dataset, batch_size=8, sampler=self.sampler)

            def _run_epoch(self, epoch):
                for source, targets in self.train_loader:
                    self._run_batch(source, targets)

            def train(self, max_epochs):
                for epoch in range(max_epochs):
                    self._run_epoch(epoch)
    """,
    "step_based_loop_reiterating_the_loader": """
        from torch.utils.data.distributed import DistributedSampler
        from torch.utils.data import DataLoader

        sampler = DistributedSampler(ds)  # expect: TL014
        loader = DataLoader(ds, sampler=sampler, batch_size=4)
        step = 0
        while step < max_steps:
            for batch in loader:
                train_step(batch)
                step += 1
    """,
    "horovod_wrapped_loader_and_configured_shuffle": """
        import torch
        from torch.utils.data import DataLoader

        if using_horovod:
            data_sampler = torch.utils.data.distributed.DistributedSampler(  # expect: TL014
                ds, num_replicas=world_size, rank=rank, shuffle=opt["shuffle"])
        else:
            data_sampler = None
        dl = DataLoader(ds, BATCH_SIZE, shuffle=not data_sampler, sampler=data_sampler)
        (distr_vae, distr_opt, distr_dl, distr_sched) = backend.distribute(
            model=vae, optimizer=opt, training_data=dl, lr_scheduler=sched)
        for epoch in range(EPOCHS):
            for i, (images, _) in enumerate(distr_dl):
                loss = distr_vae(images)
                loss.backward()
                distr_opt.step()
    """,
}

GOOD = {
    "set_epoch_called": """
        from torch.utils.data import DataLoader
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(dataset)
        loader = DataLoader(dataset, sampler=sampler)
        for epoch in range(10):
            sampler.set_epoch(epoch)
            for x in loader:
                step(x)
    """,
    "set_epoch_through_the_loader": """
        from torch.utils.data import DataLoader
        from torch.utils.data.distributed import DistributedSampler

        def train(loader, epoch):
            loader.sampler.set_epoch(epoch)
            for x in loader:
                step(x)

        loader = DataLoader(dataset, sampler=DistributedSampler(dataset))
        for epoch in range(10):
            train(loader, epoch)
    """,
    "set_epoch_guarded": """
        import torch

        train_sampler = torch.utils.data.distributed.DistributedSampler(ds) if distributed else None
        train_loader = torch.utils.data.DataLoader(ds, sampler=train_sampler)
        for epoch in range(10):
            if distributed:
                train_sampler.set_epoch(epoch)
            train(train_loader)
    """,
    "no_shuffle": """
        from torch.utils.data import DataLoader
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(dataset, shuffle=False)
        loader = DataLoader(dataset, sampler=sampler)
        for epoch in range(10):
            for x in loader:
                step(x)
    """,
    "validation_sampler": """
        from torch.utils.data import DataLoader
        from torch.utils.data.distributed import DistributedSampler

        val_sampler = DistributedSampler(val_set)
        val_loader = DataLoader(val_set, sampler=val_sampler)
        for epoch in range(10):
            for x in val_loader:
                evaluate(x)
    """,
    "loader_returned_to_another_module": """
        from torch.utils.data import DataLoader
        from torch.utils.data.distributed import DistributedSampler

        def build_loader(dataset, batch_size):
            sampler = DistributedSampler(dataset)
            return DataLoader(dataset, batch_size=batch_size, sampler=sampler)
    """,
    "single_pass_no_epoch_loop": """
        from torch.utils.data import DataLoader
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(dataset)
        loader = DataLoader(dataset, sampler=sampler)
        for x in loader:
            step(x)
    """,
    "custom_sampler_of_another_library": """
        from .samplers import DistributedSampler
        from torch.utils.data import DataLoader

        sampler = DistributedSampler(dataset)
        loader = DataLoader(dataset, sampler=sampler)
        for epoch in range(10):
            for x in loader:
                step(x)
    """,
    "loader_only_measured_in_the_loop": """
        from torch.utils.data import DataLoader
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(dataset)
        loader = DataLoader(dataset, sampler=sampler)
        for epoch in range(10):
            print(len(loader))
    """,
    "accelerate_prepared_loader": """
        from torch.utils.data import DataLoader
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(dataset)
        loader = DataLoader(dataset, sampler=sampler)
        model, optimizer, train_dl = accelerator.prepare(model, optimizer, loader)
        for epoch in range(10):
            for batch in train_dl:
                accelerator.backward(model(batch))
    """,
    "loop_that_runs_once": """
        from torch.utils.data import DataLoader
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(dataset, shuffle=True)
        loader = DataLoader(dataset, sampler=sampler)
        for _ in range(1):
            for images, _ in tqdm(loader):
                stats(images)
    """,
}

test_bad, test_good = case_tests(C, BAD, GOOD)


def test_positive_examples_pass_the_prefilter():
    for name, text in BAD.items():
        assert [r.CODE for r in _rules_matching(src(text), C)] == C, name


def test_message():
    (d,) = lint(BAD["ddp_script"], C)
    assert d.name == "distributed-sampler-without-set-epoch" and "`loader`" in d.message
    assert "line 9" in d.message and d.fix is not None and d.fix.applicability.value == "unsafe"


def test_fix_inserts_set_epoch():
    assert_fix_roundtrip(
        BAD["ddp_script"],
        C,
        """
        import torch
        from torch.utils.data import DataLoader
        from torch.utils.data.distributed import DistributedSampler

        def main(rank, world_size):
            dataset = MyDataset()
            sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank)
            loader = DataLoader(dataset, batch_size=32, sampler=sampler, num_workers=4)
            for epoch in range(100):
                sampler.set_epoch(epoch)
                for x, y in loader:
                    optimizer.zero_grad()
                    loss_fn(model(x), y).backward()
                    optimizer.step()
        """,
    )


def test_fix_inline_sampler_uses_the_loader():
    fixed = assert_fix_roundtrip(BAD["inline_sampler_and_train_helper"], C)
    assert "        train_loader.sampler.set_epoch(epoch)\n        train_one_epoch(" in fixed


def test_fix_guards_a_sampler_that_may_be_none():
    fixed = assert_fix_roundtrip(BAD["conditional_sampler_imagenet_style"], C)
    assert (
        "    for epoch in range(args.start_epoch, args.epochs):\n"
        "        if train_sampler is not None:\n"
        "            train_sampler.set_epoch(epoch)\n"
        "        adjust_learning_rate(optimizer, epoch, args)\n"
    ) in fixed


def test_fix_in_a_class():
    fixed = assert_fix_roundtrip(BAD["trainer_class"], C)
    assert "        for epoch in range(max_epochs):\n            self.sampler.set_epoch(epoch)\n" in fixed


def test_fix_when_the_sampler_exists_on_one_path_only():
    code = """
        from torch.utils.data import DataLoader
        from torch.utils.data.distributed import DistributedSampler

        if opt["dist"]:
            train_sampler = DistributedSampler(train_set, shuffle=True)  # expect: TL014
            train_loader = DataLoader(train_set, batch_size=8, sampler=train_sampler)
        else:
            train_loader = DataLoader(train_set, batch_size=8, shuffle=True)
        for epoch in range(1000000):
            for i, train_data in enumerate(train_loader):
                model.optimize_parameters(train_data)
    """
    fixed = assert_fix_roundtrip(code, C)
    assert (
        "for epoch in range(1000000):\n"
        "    if hasattr(train_loader.sampler, \"set_epoch\"):\n"
        "        train_loader.sampler.set_epoch(epoch)\n"
        "    for i, train_data"
    ) in fixed


def test_fix_when_the_other_path_uses_a_random_sampler():
    code = """
        from torch.utils.data import DataLoader, RandomSampler
        from torch.utils.data.distributed import DistributedSampler

        if args.local_rank == -1:
            train_sampler = RandomSampler(train_data)
        else:
            train_sampler = DistributedSampler(train_data)  # expect: TL014
        train_dataloader = DataLoader(train_data, sampler=train_sampler, batch_size=32)
        for epoch in range(int(args.num_train_epochs)):
            for step, batch in enumerate(train_dataloader):
                model(batch).backward()
    """
    fixed = assert_fix_roundtrip(code, C)
    assert (
        "for epoch in range(int(args.num_train_epochs)):\n"
        "    if hasattr(train_sampler, \"set_epoch\"):\n"
        "        train_sampler.set_epoch(epoch)\n"
    ) in fixed
    (d,) = lint(code.replace("for epoch in", "for _ in"), C)
    assert d.fix is None  # `_`: the user names the epoch


def test_no_fix_without_an_epoch_variable():
    (d,) = lint(BAD["step_based_loop_reiterating_the_loader"], C)
    assert d.fix is None


def test_fix_is_unsafe_only():
    _, applied = fix(BAD["ddp_script"], C, unsafe=False)
    assert applied == 0
