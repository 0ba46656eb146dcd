"""TL017 forward-called-directly: true positives (marked `# expect: TL017`) and near-misses."""

from helpers import assert_fix_roundtrip, case_tests, fix, lint, src

from trainlint.engine import _rules_matching

C = ["TL017"]

BAD = {
    "training_loop": """
        import torch
        import torchvision

        model = torchvision.models.resnet18(num_classes=10).cuda()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for x, y in loader:
            out = model.forward(x)  # expect: TL017
            loss = criterion(out, y)
            loss.backward()
            optimizer.step()
    """,
    "inner_module_of_a_wrapper_built_here": """
        import torch
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU())
        ddp_model = DDP(net, device_ids=[rank])
        for batch in loader:
            loss = net.forward(batch).sum()  # expect: TL017
            loss.backward()
    """,
    "local_module_class_in_evaluation": """
        import torch
        from torch import nn

        class Net(nn.Module):
            def forward(self, x):
                return self.fc(x)

        def evaluate(loader):
            net = Net().to("cuda")
            with torch.no_grad():
                return [net.forward(x) for x in loader]  # expect: TL017
    """,
    "annotated_parameter": """
        from torch import nn

        def predict(model: nn.Module, x):
            return model.forward(x)  # expect: TL017
    """,
    "hf_model": """
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained("gpt2")
        out = model.forward(input_ids=ids, labels=ids)  # expect: TL017
    """,
    "submodule_in_a_parent_forward": """
        import timm
        from torch import nn

        class Classifier(nn.Module):
            def __init__(self):
                super().__init__()
                self.backbone = timm.create_model("resnet50", pretrained=True)
                self.head = nn.Linear(2048, 10)

            def forward(self, x):
                return self.head.forward(self.backbone.forward(x))  # expect: TL017, TL017
    """,
    "trained_model_of_unknown_origin": """
        import torch

        def train(model, loader, optimizer):
            model.train()
            for x, y in loader:
                loss = loss_fn(model.forward(x), y)  # expect: TL017
                loss.backward()
                optimizer.step()
    """,
}

GOOD = {
    "ddp_wrapper_forward_does_its_own_work": """
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = BarlowTwins(args).cuda(gpu)
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = DDP(model, device_ids=[gpu])
        for step, ((y1, y2), _) in enumerate(loader):
            loss = model.forward(y1, y2)
            scaler.scale(loss).backward()
    """,
    "call_the_module": """
        model = torchvision.models.resnet18()
        out = model(x)
    """,
    "super_forward": """
        from torch import nn

        class MyLinear(nn.Linear):
            def forward(self, x):
                return super().forward(x) * 2

        class Old(nn.Linear):
            def forward(self, x):
                return super(Old, self).forward(x)
    """,
    "base_class_forward": """
        from torch import nn

        class Child(Parent):
            def forward(self, x):
                return Parent.forward(self, x) + nn.Module.forward(self, x)
    """,
    "self_forward_from_another_method": """
        from torch import nn

        class Net(nn.Module):
            def predict(self, x):
                return self.forward(x).argmax(-1)
    """,
    "forward_passed_as_a_callable": """
        import torch.utils.checkpoint as cp

        class Block(nn.Module):
            def forward(self, x):
                return cp.checkpoint(self.layer.forward, x)
    """,
    "unknown_object_with_a_forward": """
        from mylib import Pipeline

        pipe = Pipeline()
        out = pipe.forward(x)
        result = strategy.forward(batch)
    """,
    "autograd_function": """
        import torch

        class MyFn(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x

        y = MyFn.forward(None, x)
    """,
    "smoke_test_at_the_bottom_of_a_model_file": """
        import torch
        from torch import nn

        class Net(nn.Module):
            def forward(self, x):
                return x

        if __name__ == "__main__":
            model = Net()
            model.eval()
            with torch.no_grad():
                print(model.forward(torch.randn(1, 3)).shape)
    """,
    "loss_module_forward": """
        from torch import nn
        crit = nn.CrossEntropyLoss()
        loss = crit.forward(out, y)
    """,
}

test_bad, test_good = case_tests(C, BAD, GOOD)


def test_positive_examples_pass_the_prefilter():
    for name, text in BAD.items():
        assert [r.CODE for r in _rules_matching(src(text), C)] == C, name


def test_severity_error_in_training_code_warning_elsewhere():
    (d,) = lint(BAD["training_loop"], C)
    assert d.name == "forward-called-directly" and d.severity == "error"
    assert "`model(...)`" in d.message and d.fix.applicability.value == "unsafe"
    assert {d.severity for d in lint(BAD["submodule_in_a_parent_forward"], C)} == {"warning"}
    assert [d.severity for d in lint(BAD["hf_model"], C)] == ["warning"]  # no training in the file


def test_test_files_are_left_alone():
    from trainlint.engine import lint_text

    assert lint_text(src(BAD["training_loop"]), "tests/test_models.py", C, {}).diagnostics == []


def test_fix_calls_the_module():
    fixed = assert_fix_roundtrip(BAD["inner_module_of_a_wrapper_built_here"], C)
    assert "loss = net(batch).sum()" in fixed


def test_fix_multi_line_call_and_nested_calls():
    assert_fix_roundtrip(
        """
        import torch
        model = torch.nn.Sequential(torch.nn.Linear(4, 4))
        out = model.forward(
            x,  # input
        )
        """,
        C,
        """
        import torch
        model = torch.nn.Sequential(torch.nn.Linear(4, 4))
        out = model(
            x,  # input
        )
        """,
    )
    fixed = assert_fix_roundtrip(BAD["submodule_in_a_parent_forward"], C)
    assert "return self.head(self.backbone(x))" in fixed


def test_fix_is_unsafe_only():
    _, applied = fix(BAD["training_loop"], C, unsafe=False)
    assert applied == 0
