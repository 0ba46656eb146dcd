"""TL011 model-mode-not-restored: true positives (marked `# expect: TL011`) and near-misses."""

from helpers import assert_fix_roundtrip, case_tests, fix, lint, src

from trainlint.engine import _rules_matching

C = ["TL011"]

BAD = {
    "eval_at_end_of_epoch_train_before_loop": """
        import torch
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        model.train()
        for epoch in range(10):
            for x, y in train_loader:
                optimizer.zero_grad()
                criterion(model(x), y).backward()
                optimizer.step()
            model.eval()  # expect: TL011
            with torch.no_grad():
                for x, y in val_loader:
                    acc.update(model(x), y)
    """,
    "validation_helper_does_not_restore": """
        import torch

        def validate(net, loader):
            net.eval()
            correct = 0
            with torch.no_grad():
                for x, y in loader:
                    correct += (net(x).argmax(1) == y).sum().item()
            return correct

        def main():
            model = Net()
            optimizer = torch.optim.Adam(model.parameters())
            for epoch in range(args.epochs):
                for x, y in train_loader:
                    optimizer.zero_grad()
                    F.cross_entropy(model(x), y).backward()
                    optimizer.step()
                validate(model, val_loader)  # expect: TL011
    """,
    "mid_epoch_validation": """
        model.train()
        for step, batch in enumerate(loader):
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            if step % eval_every == 0:
                evaluate(model)  # expect: TL011

        def evaluate(m):
            m.eval()
            with torch.no_grad():
                for b in val_loader:
                    m(**b)
    """,
    "trainer_class": """
        import torch

        class Trainer:
            def __init__(self, model):
                self.model = model
                self.optimizer = torch.optim.AdamW(model.parameters())

            def train_epoch(self):
                for batch in self.train_loader:
                    self.optimizer.zero_grad()
                    self.model(batch).backward()
                    self.optimizer.step()

            def validate(self):
                self.model.eval()
                with torch.no_grad():
                    return sum(self.model(b) for b in self.val_loader)

            def fit(self):
                self.model.train()
                for epoch in range(self.epochs):
                    self.train_epoch()
                    self.validate()  # expect: TL011
    """,
    "evaluation_script_never_evals": """
        import torch
        import torch.nn as nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 16, 3)
                self.bn = nn.BatchNorm2d(16)
                self.fc = nn.Linear(16, 10)

            def forward(self, x):
                return self.fc(self.bn(self.conv(x)).mean((2, 3)))

        model = Net()
        model.load_state_dict(torch.load("net.pt"))
        with torch.no_grad():
            for images, labels in test_loader:
                outputs = model(images)  # expect: TL011
                correct += (outputs.argmax(1) == labels).sum().item()
    """,
    "trained_model_tested_without_eval": """
        import torch
        import torchvision

        def test(model, test_loader):
            correct = 0
            with torch.no_grad():
                for data, target in test_loader:
                    output = model(data)  # expect: TL011
                    correct += output.argmax(1).eq(target).sum().item()
            return correct

        def train(model, loader, optimizer):
            model.train()
            for data, target in loader:
                optimizer.zero_grad()
                F.nll_loss(model(data), target).backward()
                optimizer.step()

        model = torchvision.models.resnet18(num_classes=10)
    """,
}

GOOD = {
    "train_at_start_of_each_epoch": """
        for epoch in range(10):
            model.train()
            for x, y in train_loader:
                optimizer.zero_grad()
                criterion(model(x), y).backward()
                optimizer.step()
            model.eval()
            with torch.no_grad():
                for x, y in val_loader:
                    model(x)
    """,
    "helper_restores_train_mode": """
        def validate(model, loader):
            model.eval()
            with torch.no_grad():
                for x, y in loader:
                    model(x)
            model.train()

        model.train()
        for epoch in range(10):
            for x, y in train_loader:
                optimizer.zero_grad()
                criterion(model(x), y).backward()
                optimizer.step()
            validate(model, val_loader)
    """,
    "train_helper_sets_train_mode": """
        def train_one_epoch(model, loader, optimizer):
            model.train()
            for x, y in loader:
                optimizer.zero_grad()
                criterion(model(x), y).backward()
                optimizer.step()

        def validate(model, loader):
            model.eval()

        for epoch in range(10):
            train_one_epoch(model, train_loader, optimizer)
            validate(model, val_loader)
    """,
    "phase_loop_sets_the_mode_per_phase": """
        for epoch in range(num_epochs):
            for phase in ["train", "val"]:
                if phase == "train":
                    model.train()
                else:
                    model.eval()
                for inputs, labels in dataloaders[phase]:
                    optimizer.zero_grad()
                    with torch.set_grad_enabled(phase == "train"):
                        loss = criterion(model(inputs), labels)
                        if phase == "train":
                            loss.backward()
                            optimizer.step()
    """,
    "mode_from_a_flag": """
        for epoch in range(10):
            model.train(is_training)
            for x, y in loader:
                criterion(model(x), y).backward()
                optimizer.step()
            model.eval()
    """,
    "ema_model_is_not_trained": """
        model.train()
        for epoch in range(10):
            for x, y in loader:
                optimizer.zero_grad()
                criterion(model(x), y).backward()
                optimizer.step()
                ema.update(model)
            ema_model.eval()
            evaluate(ema_model)
    """,
    "eval_of_a_frozen_teacher": """
        import torch
        teacher.eval()
        optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
        for x, y in loader:
            with torch.no_grad():
                t = teacher(x)
            kd_loss(student(x), t).backward()
            optimizer.step()
    """,
    "evaluation_with_eval": """
        model = Net()
        model.eval()
        with torch.no_grad():
            for x, y in test_loader:
                model(x)
    """,
    "evaluation_of_a_loaded_model": """
        model = torch.load("model.pt")
        with torch.no_grad():
            for x, y in test_loader:
                model(x)
    """,
    "evaluation_of_a_model_without_mode_layers": """
        import torch.nn as nn

        class MLP(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc1 = nn.Linear(784, 128)
                self.fc2 = nn.Linear(128, 10)

            def forward(self, x):
                return self.fc2(torch.relu(self.fc1(x)))

        model = MLP()
        with torch.no_grad():
            for x, y in test_loader:
                model(x)
    """,
    "evaluation_without_no_grad_is_not_judged": """
        model = Net()
        for x, y in test_loader:
            model(x)
    """,
    "trained_model_from_another_file": """
        import torch
        from model import Net

        model = Net()
        optimizer = torch.optim.Adam(model.parameters())

        def test():
            with torch.no_grad():
                for x, y in testing_data_loader:
                    psnr(model(x), y)
    """,
    "local_model_built_twice_without_mode_layers": """
        import torch.nn as nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv1 = nn.Conv2d(3, 6, 5)
                self.fc1 = nn.Linear(16 * 5 * 5, 120)

        net = Net()
        net = Net()
        with torch.no_grad():
            for images, labels in testloader:
                net(images)
    """,
    "helper_given_the_mode_elsewhere": """
        def test(model, test_loader):
            with torch.no_grad():
                for data, target in test_loader:
                    model(data)

        def main():
            model.train()
            for epoch in range(3):
                train(model)
                model.eval()
                test(model, test_loader)
    """,
}

test_bad, test_good = case_tests(C, BAD, GOOD)


def test_positive_examples_pass_the_prefilter():
    for name, text in BAD.items():
        assert [r.CODE for r in _rules_matching(src(text), C)] == C, name


def test_message():
    (d,) = lint(BAD["validation_helper_does_not_restore"], C)
    assert d.name == "model-mode-not-restored" and "`model`" in d.message and "validate(...)" in d.message
    assert d.fix is not None and d.fix.applicability.value == "unsafe"


def test_fix_restores_train_mode_before_the_training_statement():
    assert_fix_roundtrip(
        BAD["eval_at_end_of_epoch_train_before_loop"],
        C,
        """
        import torch
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        model.train()
        for epoch in range(10):
            model.train()
            for x, y in train_loader:
                optimizer.zero_grad()
                criterion(model(x), y).backward()
                optimizer.step()
            model.eval()
            with torch.no_grad():
                for x, y in val_loader:
                    acc.update(model(x), y)
        """,
    )


def test_fix_in_a_class_and_helper():
    fixed = assert_fix_roundtrip(BAD["trainer_class"], C)
    assert "for epoch in range(self.epochs):\n            self.model.train()\n            self.train_epoch()" in fixed


def test_fix_multi_line_step_statement():
    code = """
        model.train()
        for epoch in range(3):
            train_one_epoch(
                model,
                optimizer,
            )
            model.eval()  # expect: TL011

        def train_one_epoch(model, optimizer):
            for x, y in loader:
                optimizer.zero_grad()
                loss_fn(model(x), y).backward()
                optimizer.step()
    """
    fixed = assert_fix_roundtrip(code, C)
    assert "for epoch in range(3):\n    model.train()\n    train_one_epoch(\n        model,\n" in fixed


def test_evaluation_fix_only_without_training_in_the_file():
    (d,) = lint(BAD["evaluation_script_never_evals"], C)
    assert d.fix is not None
    fixed = assert_fix_roundtrip(BAD["evaluation_script_never_evals"], C)
    assert "model.eval()\nwith torch.no_grad():\n    for images, labels in test_loader:" in fixed
    (d,) = lint(BAD["trained_model_tested_without_eval"], C)
    assert d.fix is None  # an eval() here would leave the training in eval mode: no automatic fix


def test_fix_is_unsafe_only():
    _, applied = fix(BAD["eval_at_end_of_epoch_train_before_loop"], C, unsafe=False)
    assert applied == 0


def test_prefilter_cases():
    assert _rules_matching("with torch.no_grad():\n    y = model(x)\n", C) == []  # no evaluation loader
    assert _rules_matching("model.eval()\nprint(model)\n", C) == []  # no optimizer step
    assert _rules_matching("model.eval()\noptimizer.step()\n", C) != []
    text = "import torchvision\nwith torch.no_grad():\n    for x in test_loader:\n        model(x)\n"
    assert _rules_matching(text, C) != []
