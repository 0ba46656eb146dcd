"""TL013 loss-graph-kept-alive: true positives (marked `# expect: TL013`) and near-misses."""

from helpers import assert_fix_roundtrip, case_tests, fix, lint, src

from trainlint.engine import _rules_matching

C = ["TL013"]

BAD = {
    "running_total_of_the_loss": """
        def train(model, loader, optimizer, criterion):
            total_loss = 0
            for x, y in loader:
                optimizer.zero_grad()
                loss = criterion(model(x), y)
                loss.backward()
                optimizer.step()
                total_loss += loss  # expect: TL013
            return total_loss / len(loader)
    """,
    "list_of_losses": """
        losses = []
        for epoch in range(10):
            for batch in loader:
                loss = model(batch).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss)  # expect: TL013
        plot(losses)
    """,
    "weighted_by_batch_size_with_amp": """
        epoch_loss = 0.0
        for images, targets in loader:
            with torch.autocast("cuda"):
                loss = criterion(model(images), targets)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
            epoch_loss = epoch_loss + loss * images.size(0)  # expect: TL013
    """,
    "loss_component_summed": """
        running_cls, running_box = 0, 0
        for batch in loader:
            loss_cls = cls_criterion(out_cls, batch.labels)
            loss_box = box_criterion(out_box, batch.boxes)
            loss = loss_cls + 5.0 * loss_box
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            running_cls += loss_cls  # expect: TL013
            running_box += loss_box.mean()  # expect: TL013
    """,
    "self_history_in_a_trainer": """
        class Trainer:
            def fit(self):
                for batch in self.loader:
                    loss = self.model(batch)
                    self.accelerator.backward(loss)
                    self.optimizer.step()
                    self.optimizer.zero_grad()
                    self.history["loss"].append(loss)  # expect: TL013
    """,
    "epoch_total_reset_per_epoch_only": """
        for epoch in range(epochs):
            running = 0
            for x, y in loader:
                loss = F.mse_loss(net(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                running += loss  # expect: TL013
            print(epoch, running / len(loader))
    """,
}

GOOD = {
    "item": """
        total_loss = 0
        for x, y in loader:
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            total_loss += loss.item()
            losses.append(loss.item())
    """,
    "detach_float_data": """
        total, hist = 0.0, []
        for x, y in loader:
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            total += float(loss)
            total += loss.detach() * x.size(0)
            hist.append(loss.detach().cpu())
            hist.append(loss.data)
    """,
    "list_reset_each_iteration": """
        for x, y in loader:
            parts = []
            loss = criterion(model(x), y)
            parts.append(loss)
            loss.backward()
            optimizer.step()
    """,
    "list_cleared_each_iteration": """
        parts = []
        for x, y in loader:
            loss = criterion(model(x), y)
            loss.backward()
            parts.append(loss)
            log(parts)
            parts.clear()
    """,
    "reset_after_logging": """
        running = 0
        for i, (x, y) in enumerate(loader):
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            running += loss
            if i % 100 == 99:
                print(running / 100)
                running = 0
    """,
    "accumulated_to_backpropagate_the_total": """
        for batch in loader:
            total = 0
            for chunk in batch.split(4):
                total = total + model(chunk).sum()
            total.backward()
            optimizer.step()
    """,
    "total_backpropagated_after_the_loop": """
        loss_sum = 0
        for k in range(n_tasks):
            loss = task_loss(k)
            loss_sum += loss
        loss_sum.backward()
    """,
    "no_backward_in_the_loop": """
        total = 0
        for x, y in val_loader:
            total += criterion(model(x), y)
    """,
    "under_no_grad": """
        total = 0
        for x, y in loader:
            loss = criterion(model(x), y)
            loss.backward()
            with torch.no_grad():
                total += loss
    """,
    "loss_rebound_to_a_number": """
        total = 0
        for x, y in loader:
            loss = criterion(model(x), y)
            loss.backward()
            loss = loss.item()
            total += loss
    """,
    "helper_reduces_the_loss": """
        total = 0
        for x, y in loader:
            loss = criterion(model(x), y)
            loss.backward()
            total += reduce_tensor(loss)
            meter.update(loss)
    """,
    "defined_in_the_loop": """
        for x, y in loader:
            loss = criterion(model(x), y)
            loss.backward()
            acc = loss
            acc += 1
    """,
}

test_bad, test_good = case_tests(C, BAD, GOOD)


def test_positive_examples_pass_the_prefilter():
    for name, text in BAD.items():
        assert [r.CODE for r in _rules_matching(src(text), C)] == C, name


def test_message():
    (d,) = lint(BAD["running_total_of_the_loss"], C)
    assert d.name == "loss-graph-kept-alive" and d.severity == "error"
    assert "`total_loss`" in d.message and "loss.item()" in d.message
    assert d.fix is not None and d.fix.applicability.value == "unsafe"


def test_fix_item_for_a_number_total():
    assert_fix_roundtrip(
        BAD["running_total_of_the_loss"],
        C,
        src(BAD["running_total_of_the_loss"]).replace("total_loss += loss  # expect: TL013",
                                                      "total_loss += loss.item()"),
    )


def test_fix_detach_for_lists_and_tensor_totals():
    fixed = assert_fix_roundtrip(BAD["list_of_losses"], C)
    assert "losses.append(loss.detach())" in fixed
    fixed = assert_fix_roundtrip(BAD["loss_component_summed"], C)
    assert "running_cls += loss_cls.item()" in fixed and "running_box += loss_box.mean().item()" in fixed
    code = """
        total = 0
        for x, y in loader:
            loss = criterion(model(x), y)
            loss.backward()
            total += loss  # expect: TL013
        print(total.item())
    """
    assert "total += loss.detach()" in assert_fix_roundtrip(code, C)


def test_fix_multi_line_append():
    assert_fix_roundtrip(
        """
        history = []
        for x, y in loader:
            loss = criterion(model(x), y)
            loss.backward()
            history.append(
                (loss)  # the loss
            )
        """,
        C,
        """
        history = []
        for x, y in loader:
            loss = criterion(model(x), y)
            loss.backward()
            history.append(
                (loss).detach()  # the loss
            )
        """,
    )


def test_fix_is_unsafe_only():
    _, applied = fix(BAD["running_total_of_the_loss"], C, unsafe=False)
    assert applied == 0


def test_prefilter_needs_a_backward_call():
    assert _rules_matching("def backward(ctx, grad):\n    total += grad\n    return total\n", C) == []
    assert _rules_matching("loss.backward()\ntotal += loss\n", C) != []
