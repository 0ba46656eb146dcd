"""Fixes keep the code's layout (issue 14, item 2): they edit the smallest range, and an argument added to
a multi-line call goes on a line of its own in the call's style. One multi-line form per fix."""

import pytest
from helpers import fix, src


CASES = {
    # TL003: only ` / x.size(0)` goes; the call keeps its indentation and its `)`
    "TL003": ("""
        import torch.nn as nn
        criterion = nn.CrossEntropyLoss()
        for x, y in loader:
            optimizer.zero_grad()
            loss = criterion(
                model(x),
                y,
            ) / x.size(0)
            loss.backward()
            optimizer.step()
    """, """
        import torch.nn as nn
        criterion = nn.CrossEntropyLoss()
        for x, y in loader:
            optimizer.zero_grad()
            loss = criterion(
                model(x),
                y,
            )
            loss.backward()
            optimizer.step()
    """),
    # TL002: only ` + smooth` leaves the numerator; the multi-line overlap keeps its layout
    "TL002": ("""
        import torch

        def dice_loss(pred, target, smooth=1.0):
            inter = torch.sum(
                pred * target,
                dim=(1, 2),
            )
            num = 2.0 * inter + smooth
            den = pred.sum() + target.sum() + smooth
            return 1 - num / den
    """, """
        import torch

        def dice_loss(pred, target, smooth=1.0):
            inter = torch.sum(
                pred * target,
                dim=(1, 2),
            )
            num = 2.0 * inter
            den = pred.sum() + target.sum() + smooth
            return 1 - num / den
    """),
    # TL004: a trailing comma style call gets `drop_last=True,` on its own line
    "TL004": ("""
        import torch.nn as nn
        from torch.utils.data import DataLoader
        crit = nn.MSELoss()
        loader = DataLoader(
            ds,
            batch_size=64,
            shuffle=True,
        )
        for x, y in loader:
            optimizer.zero_grad()
            loss = crit(model(x), y) / x.size(0)
            loss.backward()
            optimizer.step()
    """, """
        import torch.nn as nn
        from torch.utils.data import DataLoader
        crit = nn.MSELoss()
        loader = DataLoader(
            ds,
            batch_size=64,
            shuffle=True,
            drop_last=True,
        )
        for x, y in loader:
            optimizer.zero_grad()
            loss = crit(model(x), y) / x.size(0)
            loss.backward()
            optimizer.step()
    """),
    # TL005: no trailing comma, `)` on its own line: `,\n    eps=1e-4`
    "TL005": ("""
        import torch
        model = Net().half()
        opt = torch.optim.Adam(
            model.parameters(),
            lr=1e-3
        )
    """, """
        import torch
        model = Net().half()
        opt = torch.optim.Adam(
            model.parameters(),
            lr=1e-3,
            eps=1e-4
        )
    """),
}


@pytest.mark.parametrize("code", sorted(CASES))
def test_fix_keeps_the_layout_of_a_multi_line_form(code):
    before, after = CASES[code]
    fixed, applied = fix(before, [code])
    assert applied >= 1
    assert fixed == src(after)
    again, applied2 = fix(fixed, [code])
    assert applied2 == 0 and again == fixed


def test_a_one_line_call_stays_on_one_line():
    fixed, _ = fix("""
        import torch
        model = Net().half()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    """, ["TL005"])
    assert "opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-4)\n" in fixed
