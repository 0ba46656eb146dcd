"""Project-wide analysis: facts about definitions in other modules, found through imports (absolute,
relative, `__init__` re-exports, `from x import *`), on small multi-file projects linted as a whole."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from trainlint.codes import STATIC_CODES
from trainlint.config import Settings
from trainlint.engine import Job, process


def write(root, files):
    for name, text in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text).lstrip("\n"))


def lint(path, codes=None):
    s = Settings()
    return process(Job(str(path), list(codes or STATIC_CODES), s.rule_options()))


def codes_at(path, codes=None):
    return sorted((d.code, d.location.row) for d in lint(path, codes).diagnostics)


ASPP = '''
    import torch.nn as nn

    class ASPPPooling(nn.Sequential):
        def __init__(self, cin, cout):
            super().__init__(
                nn.AdaptiveAvgPool2d(1),
                nn.Conv2d(cin, cout, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )

    class DeepLabHead(nn.Module):
        def __init__(self, cin, classes):
            super().__init__()
            self.pool = ASPPPooling(cin, 256)
            self.conv = nn.Conv2d(256, classes, 1)

    class DeepLab(nn.Module):
        def __init__(self, classes):
            super().__init__()
            self.head = DeepLabHead(2048, classes)
'''

UNET = '''
    import torch.nn as nn

    class UNet(nn.Module):
        def __init__(self, classes):
            super().__init__()
            self.enc = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU())
            self.out = nn.Conv2d(64, classes, 1)
'''

TRAIN = '''
    import torch
    from torch.utils.data import DataLoader
    from models import {model}

    model = {model}(21)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    train_loader = DataLoader(train_set, batch_size=16, shuffle=True{extra})
    for epoch in range(30):
        for x, y in train_loader:
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
'''


def project(tmp_path, model="DeepLab", extra="", models_init="from .deeplab import *\nfrom .unet import UNet\n"):
    write(tmp_path, {
        "pyproject.toml": "[project]\nname = 'seg'\n",
        "models/__init__.py": models_init,
        "models/deeplab.py": ASPP,
        "models/unet.py": UNET,
        "train.py": TRAIN.format(model=model, extra=extra),
    })
    return tmp_path / "train.py"


def test_batchnorm_after_global_pooling_in_a_model_of_another_module(tmp_path):
    r = lint(project(tmp_path), ["TL004"])
    (d,) = r.diagnostics
    assert (d.code, d.location.row, d.severity) == ("TL004", 7, "warning")
    assert "BatchNorm2d" in d.message and "models/deeplab.py" in d.message
    assert "one sample" in d.message


@pytest.mark.parametrize("extra", [", drop_last=True", ", batch_size=1"])
def test_silent_when_the_last_batch_cannot_hold_one_sample(tmp_path, extra):
    path = project(tmp_path, extra=extra.replace(", batch_size=1", ""))
    if "batch_size=1" in extra:
        path.write_text(path.read_text().replace("batch_size=16", "batch_size=1"))
    assert codes_at(path, ["TL004"]) == []


def test_silent_when_the_model_has_batchnorm_only_on_spatial_maps(tmp_path):
    assert codes_at(project(tmp_path, model="UNet"), ["TL004"]) == []


def test_the_findings_follow_a_change_of_the_model_module_through_the_cache(tmp_path):
    path = project(tmp_path, model="UNet")
    cmd = [sys.executable, "-m", "trainlint", "--select", "TL004", "--output-format", "json", "--exit-zero",
           str(path)]
    env = dict(os.environ)
    first = json.loads(subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env).stdout)
    assert first == []
    # UNet gains a pooled head with BatchNorm: train.py is unchanged, its cached result must not be used
    (tmp_path / "models/unet.py").write_text(textwrap.dedent(UNET).replace(
        "self.out = nn.Conv2d(64, classes, 1)",
        "self.out = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(64, classes, 1), nn.BatchNorm2d(classes))"))
    second = json.loads(subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env).stdout)
    assert [d["code"] for d in second] == ["TL004"]
    assert os.path.isdir(tmp_path / ".trainlint_cache")


def test_linted_code_is_never_imported(tmp_path):
    path = project(tmp_path)
    sentinel = tmp_path / "IMPORTED"
    for name in ("models/__init__.py", "models/deeplab.py"):
        p = tmp_path / name
        p.write_text(f"open({str(sentinel)!r}, 'w').close()\n" + p.read_text())
    assert codes_at(path, ["TL004"]) == [("TL004", 7)]
    assert not sentinel.exists()


def test_relative_imports_and_loss_helpers_in_a_package(tmp_path):
    write(tmp_path, {
        "setup.py": "",
        "seg/__init__.py": "",
        "seg/losses.py": '''
            import torch

            def weighted_bce(pred, target):
                b, c, h, w = target.shape
                per_pixel = torch.nn.functional.binary_cross_entropy_with_logits(pred, target, reduction="none")
                return torch.sum(per_pixel) / b
        ''',
        "seg/train.py": '''
            from .losses import weighted_bce

            def train_one_epoch(loader, model, optimizer):
                for images, labels in loader:
                    loss = sum([weighted_bce(p, labels) for p in model(images)])
                    loss /= images.shape[0]
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
        ''',
    })
    assert codes_at(tmp_path / "seg/train.py", ["TL003"]) == [("TL003", 6)]


def test_a_helper_that_sums_is_not_averaged_twice(tmp_path):
    write(tmp_path, {
        "setup.py": "",
        "losses.py": '''
            import torch

            def weighted_bce(pred, target):
                return torch.sum(torch.nn.functional.binary_cross_entropy_with_logits(pred, target, reduction="none"))
        ''',
        "train.py": '''
            from losses import weighted_bce

            for images, labels in loader:
                loss = weighted_bce(model(images), labels) / images.shape[0]
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        ''',
    })
    assert codes_at(tmp_path / "train.py", ["TL003"]) == []


def test_dataloader_subclass_and_kwargs_dictionaries(tmp_path):
    write(tmp_path, {
        "setup.py": "",
        "data/__init__.py": "from .loader import GraphLoader, SafeLoader\n",
        "data/loader.py": '''
            from torch.utils.data import DataLoader

            class GraphLoader(DataLoader):
                def __init__(self, dataset, batch_size=50, shuffle=True):
                    super().__init__(dataset, batch_size, shuffle)

            class SafeLoader(DataLoader):
                def __init__(self, dataset, batch_size=50, shuffle=True):
                    drop_last = len(dataset) % batch_size == 1
                    super().__init__(dataset, batch_size, shuffle, drop_last=drop_last)
        ''',
        "model.py": '''
            import torch.nn as nn

            class MLP(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.net = nn.Sequential(nn.Linear(300, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 1))
        ''',
        "train.py": '''
            import torch
            from data import GraphLoader, SafeLoader
            from model import MLP

            model = MLP()
            opt = torch.optim.Adam(model.parameters())
            train_loader = GraphLoader(train_set, 64)
            other_train_loader = SafeLoader(train_set, 64)
            kwargs = dict(batch_size=64, drop_last=False, num_workers=4)
            third_train_loader = torch.utils.data.DataLoader(train_set, shuffle=True, **kwargs)
            safe_kwargs = {"batch_size": 64, "drop_last": True}
            fourth_train_loader = torch.utils.data.DataLoader(train_set, shuffle=True, **safe_kwargs)
        ''',
    })
    found = codes_at(tmp_path / "train.py", ["TL004"])
    assert found == [("TL004", 7), ("TL004", 10)]


def test_a_loader_factory_in_a_project_whose_model_is_built_from_a_config(tmp_path):
    """The training code cannot follow the model (a config names it): the project's models are read."""
    write(tmp_path, {
        "pyproject.toml": "",
        "pkg/__init__.py": "",
        "pkg/heads.py": '''
            import torch.nn as nn

            class Decoder(nn.Module):
                def __init__(self, c, e):
                    super().__init__()
                    self.pool = nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(c, e), nn.BatchNorm1d(e))
        ''',
        "pkg/data.py": '''
            import torch

            def get_dataloader(dataset, batch_size=1, shuffle=True):
                return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=False)
        ''',
    })
    assert codes_at(tmp_path / "pkg/data.py", ["TL004"]) == [("TL004", 4)]


def test_unresolvable_imports_and_broken_modules_are_silent(tmp_path):
    write(tmp_path, {
        "pyproject.toml": "",
        "models.py": "class Broken(:\n",
        "train.py": TRAIN.format(model="Broken", extra=""),
    })
    assert codes_at(tmp_path / "train.py", ["TL004"]) == []


def test_the_example_project_shows_findings_from_other_modules():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    found = codes_at(os.path.join(repo, "examples", "project", "train.py"))
    assert [c for c, _ in found] == ["TL003", "TL004"]


def test_a_model_handed_to_a_framework_fit_is_the_trained_model(tmp_path):
    """`trainer.fit(model)` names the trained model: a LightningModule wrapping an FPN is followed and
    the project's other architectures (a DeepLab with pooled BatchNorm) do not count."""
    write(tmp_path, {
        "pyproject.toml": "",
        "models/__init__.py": "from .deeplab import *\n",
        "models/deeplab.py": ASPP,
        "notebook_train.py": '''
            import lightning as L
            import segmentation_models_pytorch as smp
            from torch.utils.data import DataLoader

            class PetModel(L.LightningModule):
                def __init__(self, arch, encoder):
                    super().__init__()
                    self.model = smp.create_model(arch, encoder_name=encoder)

            train_dataloader = DataLoader(train_dataset, batch_size=8, shuffle=True)
            model = PetModel("FPN", "resnet34")
            trainer = L.Trainer(max_epochs=10)
            trainer.fit(model, train_dataloaders=train_dataloader)
        ''',
    })
    assert codes_at(tmp_path / "notebook_train.py", ["TL004"]) == []


def test_a_wrapped_library_model_is_still_the_trained_model(tmp_path):
    """`model = resnet50(); model = DDP(model)`: the trained model is torchvision's ResNet (no pooled
    BatchNorm), not the projector with BatchNorm1d that the project's pre-training script defines."""
    write(tmp_path, {
        "pyproject.toml": "",
        "main.py": '''
            import torch.nn as nn

            class BarlowTwins(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.projector = nn.Sequential(nn.Linear(2048, 8192), nn.BatchNorm1d(8192), nn.ReLU())
        ''',
        "evaluate.py": '''
            import torch
            from torchvision import models

            def main_worker(gpu, args):
                model = models.resnet50().cuda(gpu)
                model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[gpu])
                optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
                kwargs = dict(batch_size=256, num_workers=8, pin_memory=True)
                train_loader = torch.utils.data.DataLoader(train_dataset, sampler=train_sampler, **kwargs)
                for epoch in range(100):
                    model.train()
                    for images, target in train_loader:
                        loss = torch.nn.functional.cross_entropy(model(images), target)
                        optimizer.zero_grad()
                        loss.backward()
                        optimizer.step()
        ''',
    })
    assert codes_at(tmp_path / "evaluate.py", ["TL004"]) == []
