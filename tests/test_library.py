"""The library facts table (analysis/library.py): one test per entry."""

import pytest

from trainlint.analysis.library import FABRIC_FP16_PARAMS, FABRIC_MIXED, library_model_batchnorm


@pytest.mark.parametrize("name", [
    "torchvision.models.segmentation.deeplabv3_resnet50",
    "torchvision.models.segmentation.deeplabv3_mobilenet_v3_large",
    "torchvision.models.segmentation.deeplabv3.deeplabv3_resnet101",
    "segmentation_models_pytorch.DeepLabV3Plus",
    "segmentation_models_pytorch.PSPNet",
])
def test_models_with_batchnorm_on_pooled_features(name):
    desc, where, _ = library_model_batchnorm(name)
    assert "BatchNorm2d" in desc and where == name


@pytest.mark.parametrize("name", [
    "torchvision.models.segmentation.fcn_resnet50", "torchvision.models.segmentation.lraspp_mobilenet_v3_large",
    "torchvision.models.resnet50", "torchvision.models.vit_b_16",
])
def test_models_known_to_be_safe(name):
    assert library_model_batchnorm(name) == ""


def test_unknown_library_models_are_unknown():
    assert library_model_batchnorm("timm.create_model") is None


def test_fabric_precisions():
    assert FABRIC_FP16_PARAMS == {"16-true", "half"}
    assert not FABRIC_FP16_PARAMS & FABRIC_MIXED


def test_a_torchvision_deeplab_trained_without_drop_last():
    from helpers import found

    code = """
        import torch
        import torchvision
        model = torchvision.models.segmentation.deeplabv3_resnet50(num_classes=21)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        train_loader = torch.utils.data.DataLoader(train_set, batch_size=8, shuffle=True)
        for x, y in train_loader:
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x)["out"], y)
            loss.backward()
            optimizer.step()
    """
    assert found(code, ["TL004"]) == {(5, "TL004")}
    assert found(code.replace("deeplabv3_resnet50", "fcn_resnet50"), ["TL004"]) == set()
