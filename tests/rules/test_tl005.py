"""TL005 optimizer-eps-underflow."""

import pytest
from helpers import case_tests, assert_fix_roundtrip, found, options

C = ["TL005"]

BAD = {
    "half_model_default_eps": """
        import torch
        model = Net().cuda().half()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)  # expect: TL005
    """,
    "to_float16_alias_import": """
        import torch
        from torch import optim

        def build():
            net = Net()
            net.to(torch.float16)
            return optim.AdamW(net.parameters(), lr=3e-4, weight_decay=0.01)  # expect: TL005
    """,
    "explicit_tiny_eps": """
        import torch
        model = Net()
        model.half()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-10)  # expect: TL005
    """,
    "from_pretrained_fp16": """
        import torch
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained("gpt2", torch_dtype=torch.float16)
        optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)  # expect: TL005
    """,
    "to_device_and_dtype": """
        import torch
        from torch.optim import RMSprop

        model = Net().to("cuda", torch.half)
        opt = RMSprop(model.parameters())  # expect: TL005
    """,
    "param_groups_in_class": """
        import torch

        class Trainer:
            def __init__(self, cfg):
                self.model = build(cfg).to(dtype=torch.float16)
                self.optimizer = torch.optim.Adam(  # expect: TL005
                    [{"params": self.model.parameters(), "lr": cfg.lr}],
                    betas=(0.9, 0.98),
                )
    """,
    "positional_eps_adagrad": """
        import torch
        m = Net().half()
        o = torch.optim.Adagrad(m.parameters(), 0.01, 0, 0, 0, 1e-10)  # expect: TL005
    """,
    "filtered_params_list": """
        import torch
        model = Net().half()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.NAdam(params)  # expect: TL005
    """,
    "fabric_true_half_precision_by_default": """
        import lightning as L
        import torch

        def setup(precision=None, tpu=False):
            if precision is None:
                precision = "32-true" if tpu else "16-true"
            fabric = L.Fabric(devices=1, precision=precision)
            fabric.launch(main)

        def main(fabric):
            model = GPT(config)
            trainable = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(trainable, lr=3e-3)  # expect: TL005
            model, optimizer = fabric.setup(model, optimizer)
    """,
}

GOOD = {
    "amp_fp32_params": """
        import torch
        model = Net().cuda()
        scaler = torch.cuda.amp.GradScaler()
        optimizer = torch.optim.Adam(model.parameters())
    """,
    "bf16": """
        import torch
        model = Net().to(torch.bfloat16)
        optimizer = torch.optim.AdamW(model.parameters())
    """,
    "fp32": """
        import torch
        model = Net().float()
        optimizer = torch.optim.Adam(model.parameters())
    """,
    "explicit_safe_eps": """
        import torch
        model = Net().half()
        optimizer = torch.optim.Adam(model.parameters(), eps=1e-4)
    """,
    "eps_1e_7": """
        import torch
        model = Net().half()
        optimizer = torch.optim.Adam(model.parameters(), eps=1e-7)
    """,
    "sgd": """
        import torch
        model = Net().half()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    """,
    "fp32_master_weights": """
        import torch
        model = Net().half()
        master = [p.detach().clone().float() for p in model.parameters()]
        optimizer = torch.optim.Adam(master)
    """,
    "adadelta_default_is_representable": """
        import torch
        model = Net().half()
        optimizer = torch.optim.Adadelta(model.parameters())
    """,
    "other_model_is_half": """
        import torch
        teacher = Teacher().half()
        student = Student()
        optimizer = torch.optim.Adam(student.parameters())
    """,
    "not_torch_adam": """
        from mylib import Adam
        model = Net().half()
        optimizer = Adam(model.parameters())
    """,
    "fabric_mixed_precision_keeps_fp32_weights": """
        import lightning as L
        import torch

        def setup(precision="bf16-mixed"):
            fabric = L.Fabric(devices=1, precision=precision)
            fabric.launch(main)

        def main(fabric):
            model = GPT(config)
            optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
            model, optimizer = fabric.setup(model, optimizer)
    """,
    "fabric_true_half_with_a_representable_eps": """
        import lightning as L
        import torch

        fabric = L.Fabric(precision="16-true")
        model = GPT(config)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, eps=1e-4)
        model, optimizer = fabric.setup(model, optimizer)
    """,
}


test_bad, test_good = case_tests(C, BAD, GOOD)


def test_fix_is_safe_and_sets_eps():
    from helpers import fix

    text, applied = fix(BAD["half_model_default_eps"], C, unsafe=False)
    assert applied == 1 and "lr=1e-3, eps=1e-4)" in text
    assert_fix_roundtrip(BAD["explicit_tiny_eps"], C)


@pytest.mark.parametrize("name", BAD)
def test_every_fix_round_trips(name):
    assert_fix_roundtrip(BAD[name], C)


def test_require_explicit_eps_option():
    from helpers import lint

    code = """
        import torch
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        sgd = torch.optim.SGD(model.parameters(), lr=1e-3)
        explicit = torch.optim.Adam(model.parameters(), eps=1e-8)
    """
    assert found(code, C) == set()
    opts = options(TL005={"require-explicit-eps": True})
    (d,) = lint(code, C, opts)
    assert d.location.row == 2 and d.severity == "warning"
    assert_fix_roundtrip(code, C, opts=opts)
