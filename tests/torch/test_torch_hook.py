"""PrunerHook in real training loops: zeros after every step, optimizer state, AMP, accumulation."""

from __future__ import annotations

import copy
import gc
import io
import pickle
import warnings
import weakref
from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch_models import conv_batch, make_convnet, make_mlp, mlp_batch

from ltp_torch import LotteryTicketPruner, PrunerHook

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available"),
    ),
]

OPTIMIZERS: dict[str, Callable[[list[nn.Parameter]], torch.optim.Optimizer]] = {
    "sgd_momentum_wd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-2),
    "sgd_nesterov": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    "adam_amsgrad": lambda p: torch.optim.Adam(p, lr=1e-2, amsgrad=True),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-3, momentum=0.5),
    "adagrad": lambda p: torch.optim.Adagrad(p, lr=1e-2),
    "rmsprop_centered_wd": lambda p: torch.optim.RMSprop(
        p, lr=1e-3, momentum=0.9, centered=True, weight_decay=1e-2
    ),
    "adadelta_wd": lambda p: torch.optim.Adadelta(p, weight_decay=1e-2),
    "adamax_wd": lambda p: torch.optim.Adamax(p, lr=1e-2, weight_decay=1e-2),
    "nadam_decoupled": lambda p: torch.optim.NAdam(
        p, lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True
    ),
    "radam_decoupled": lambda p: torch.optim.RAdam(
        p, lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True
    ),
    "rprop": lambda p: torch.optim.Rprop(p, lr=1e-2),
    "asgd_wd": lambda p: torch.optim.ASGD(p, lr=1e-2, t0=1, weight_decay=1e-2),
    "adam_fused": lambda p: torch.optim.Adam(p, lr=1e-2, fused=True),
    "sgd_foreach": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, foreach=True),
}

MODELS = {
    "mlp": (make_mlp, mlp_batch),
    "convnet": (make_convnet, conv_batch),
}


def pruned_counts(pruner: LotteryTicketPruner) -> list[int]:
    return [int((~m).sum()) for m in pruner.masks]


def zero_counts(pruner: LotteryTicketPruner, module: nn.Module) -> list[int]:
    return [int((p == 0).sum()) for p in pruner.parameters(module)]


def step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: tuple) -> None:
    x, y = batch
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()


def pruned_pruner(model: nn.Module, fraction: float = 0.5) -> LotteryTicketPruner:
    pruner = LotteryTicketPruner(model)
    pruner.calc_prune_mask(model, fraction, "smallest_weights")
    return pruner


def assert_state_zero_where_pruned(
    pruner: LotteryTicketPruner, model: nn.Module, optimizer: torch.optim.Optimizer
) -> int:
    checked = 0
    for parameter, mask in zip(pruner.parameters(model), pruner.masks, strict=True):
        kept = torch.from_numpy(mask).to(parameter.device)
        for key, value in optimizer.state[parameter].items():
            if isinstance(value, torch.Tensor) and value.shape == parameter.shape:
                assert torch.all(value[~kept] == 0), key
                checked += 1
    return checked


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("optimizer_name", sorted(OPTIMIZERS))
def test_exact_zero_counts_after_every_step(model_name: str, optimizer_name: str) -> None:
    build, batch = MODELS[model_name]
    model = build()
    pruner = pruned_pruner(model)
    optimizer = OPTIMIZERS[optimizer_name](list(model.parameters()))
    params_before = list(model.parameters())
    expected = pruned_counts(pruner)
    with PrunerHook(pruner, model, optimizer) as hook:
        assert zero_counts(pruner, model) == expected  # zeroed when the hook is created
        for i in range(4):
            step(model, optimizer, batch(seed=i))
            assert zero_counts(pruner, model) == expected
        pruner.calc_prune_mask(model, 0.4, "smallest_weights")  # a second level mid-training
        expected = pruned_counts(pruner)
        for i in range(3):
            step(model, optimizer, batch(seed=10 + i))
            assert zero_counts(pruner, model) == expected
            if i == 0:  # state zeroed right after the step that picked up the new masks
                checked = assert_state_zero_where_pruned(pruner, model, optimizer)
                assert checked >= 3
    assert not hook.active
    assert all(a is b for a, b in zip(params_before, model.parameters(), strict=True))


def test_hook_equals_masking_by_hand() -> None:
    model = make_mlp()
    pruner = pruned_pruner(model, 0.6)
    reference = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    ref_optimizer = torch.optim.SGD(
        reference.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3
    )
    masks = [torch.from_numpy(m).float() for m in pruner.masks]
    hook = PrunerHook(pruner, model, optimizer)
    with torch.no_grad():
        for parameter, mask in zip(pruner.parameters(reference), masks, strict=True):
            parameter.mul_(mask)
    for i in range(5):
        step(model, optimizer, mlp_batch(seed=i))
        step(reference, ref_optimizer, mlp_batch(seed=i))
        with torch.no_grad():
            for parameter, mask in zip(pruner.parameters(reference), masks, strict=True):
                parameter.mul_(mask)
    hook.remove()
    for ours, theirs in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(ours, theirs)


def test_unpruned_masks_leave_training_unchanged() -> None:
    model = make_convnet()
    plain = copy.deepcopy(model)
    pruner = LotteryTicketPruner(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    plain_optimizer = torch.optim.Adam(plain.parameters(), lr=1e-2)
    with PrunerHook(pruner, model, optimizer):
        for i in range(3):
            step(model, optimizer, conv_batch(seed=i))
            step(plain, plain_optimizer, conv_batch(seed=i))
    for ours, theirs in zip(model.parameters(), plain.parameters(), strict=True):
        assert torch.equal(ours, theirs)


def test_gradient_accumulation() -> None:
    model = make_mlp()
    pruner = pruned_pruner(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    expected = pruned_counts(pruner)
    with PrunerHook(pruner, model, optimizer):
        for outer in range(3):
            optimizer.zero_grad()
            for micro in range(3):
                x, y = mlp_batch(seed=10 * outer + micro, n=4)
                (nn.functional.cross_entropy(model(x), y) / 3).backward()
                assert zero_counts(pruner, model) == expected
            optimizer.step()
            assert zero_counts(pruner, model) == expected


def test_grad_scaler_skipped_and_taken_steps() -> None:
    model = make_mlp()
    pruner = pruned_pruner(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    expected = pruned_counts(pruner)
    with PrunerHook(pruner, model, optimizer):
        for i in range(4):
            x, y = mlp_batch(seed=i)
            optimizer.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = nn.functional.cross_entropy(model(x), y)
            scaler.scale(loss).backward()
            skip = i == 1
            if skip:
                model[0].weight.grad[0, 0] = float("inf")
            before = [p.detach().clone() for p in model.parameters()]
            scale_before = scaler.get_scale()
            scaler.step(optimizer)
            scaler.update()
            if skip:
                assert scaler.get_scale() < scale_before
                assert all(
                    torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True)
                )
            else:
                assert not all(
                    torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True)
                )
            assert zero_counts(pruner, model) == expected


def test_several_param_groups() -> None:
    model = make_convnet()
    pruner = pruned_pruner(model, 0.7)
    optimizer = torch.optim.SGD(
        [
            {"params": [model.conv1.weight, model.conv1.bias], "lr": 0.1},
            {"params": [model.conv2.weight, model.conv2.bias, *model.bn.parameters()]},
            {"params": list(model.head.parameters()), "lr": 0.01, "momentum": 0.5},
        ],
        lr=0.05,
        momentum=0.9,
    )
    expected = pruned_counts(pruner)
    with PrunerHook(pruner, model, optimizer):
        for i in range(3):
            step(model, optimizer, conv_batch(seed=i))
            assert zero_counts(pruner, model) == expected


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_devices_and_dtypes(device: str, dtype: torch.dtype) -> None:
    model = make_mlp().to(device=device, dtype=dtype)
    pruner = pruned_pruner(model)
    # eps=1e-4: Adam's default 1e-8 underflows in float16 and turns zero updates into NaN.
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, eps=1e-4)
    expected = pruned_counts(pruner)
    with PrunerHook(pruner, model, optimizer):
        for i in range(3):
            x, y = mlp_batch(seed=i)
            step(model, optimizer, (x.to(device=device, dtype=dtype), y.to(device)))
            assert zero_counts(pruner, model) == expected
    mask_tensors = pruner.mask_tensors(pruner.parameters(model))
    width = torch.empty((), dtype=dtype).element_size()
    assert all(m.device.type == device and m.element_size() == width for m in mask_tensors)


def test_remove_detaches() -> None:
    model = make_mlp()
    pruner = pruned_pruner(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    hook = PrunerHook(pruner, model, optimizer)
    hook.remove()
    hook.remove()  # idempotent
    assert not hook.active and "removed" in repr(hook)
    step(model, optimizer, mlp_batch())
    assert sum(zero_counts(pruner, model)) < sum(pruned_counts(pruner))


def test_only_pruned_parameters_need_masks(caplog: pytest.LogCaptureFixture) -> None:
    model = make_mlp()
    pruner = pruned_pruner(model)
    # The last layer is frozen (not in the optimizer): still masked, with an info message.
    optimizer = torch.optim.SGD([*model[0].parameters(), *model[2][0].parameters()], lr=0.1)
    with caplog.at_level("INFO", logger="ltp_torch"), PrunerHook(pruner, model, optimizer):
        step(model, optimizer, mlp_batch())
    assert "2.2.weight" in caplog.text
    assert zero_counts(pruner, model) == pruned_counts(pruner)


def test_errors() -> None:
    model = make_mlp()
    pruner = pruned_pruner(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="Received: optimizer="):
        PrunerHook(pruner, model, "sgd")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Received: pruner="):
        PrunerHook(pruner.core, model, optimizer)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="does not match the pruner"):
        PrunerHook(pruner, make_convnet(), optimizer)
    other = make_mlp(seed=1)
    with pytest.raises(ValueError, match="None of the pruned parameters"):
        PrunerHook(pruner, model, torch.optim.SGD(other.parameters(), lr=0.1))
    for argument in ("zero_optimizer_state", "mask_gradients"):
        with pytest.raises(TypeError, match=f"Received: {argument}='no'"):
            PrunerHook(pruner, model, optimizer, **{argument: "no"})  # type: ignore[arg-type]


def test_gradient_clipping_sees_the_pruned_network() -> None:
    """Clipping by norm between backward and step must see only the kept weights' gradients:
    the ticket trains exactly like the network masked by torch.nn.utils.prune (whose pruned
    entries get no gradient). Before gradient masking, the pruned entries' gradients inflated
    the norm and every kept weight took a smaller step, silently."""
    model = make_mlp()
    pruner = pruned_pruner(model, 0.8)
    pruner.apply_pruning(model)
    reference = copy.deepcopy(model)
    for parameter_name, mask in zip(pruner.names, pruner.masks, strict=True):
        layer = reference.get_submodule(parameter_name.rpartition(".")[0])
        torch.nn.utils.prune.custom_from_mask(layer, "weight", torch.from_numpy(mask))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    ref_optimizer = torch.optim.SGD(reference.parameters(), lr=0.5, momentum=0.9)
    with PrunerHook(pruner, model, optimizer):
        for i in range(4):
            for net, opt in ((model, optimizer), (reference, ref_optimizer)):
                x, y = mlp_batch(seed=i)
                opt.zero_grad()
                nn.functional.cross_entropy(net(x), y).backward()
                norm = nn.utils.clip_grad_norm_(net.parameters(), 0.05)
                assert norm > 0.05  # clipping is active
                opt.step()
    for name, parameter in model.named_parameters():
        original = reference.get_parameter(name.replace("weight", "weight_orig"))
        if name in pruner.names:
            layer = reference.get_submodule(name.rpartition(".")[0])
            original = original * layer.weight_mask
        assert torch.equal(parameter, original), name


def test_gradients_follow_a_mask_change_at_once() -> None:
    """Resuming: the hook exists before the checkpoint's masks are loaded into the pruner. The
    first backward after the load must already see the loaded masks (clipping in that step)."""
    model = make_mlp()
    pruner = LotteryTicketPruner(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with PrunerHook(pruner, model, optimizer):
        saved = pruned_pruner(copy.deepcopy(model)).state_dict()
        pruner.load_state_dict(saved)
        optimizer.zero_grad()
        x, y = mlp_batch()
        nn.functional.cross_entropy(model(x), y).backward()
        for parameter, mask in zip(pruner.parameters(model), pruner.masks, strict=True):
            assert bool((parameter.grad[~torch.from_numpy(mask)] == 0).all())
            assert bool((parameter.grad[torch.from_numpy(mask)] != 0).any())


def test_a_hook_never_removed_does_not_keep_its_optimizer_alive() -> None:
    """The gradient hooks live on the parameters: they must not hold the PrunerHook (and
    through it the optimizer and its state, twice the model's size for Adam) once the user
    drops the optimizer, as IMP loops do at every level."""
    model = make_mlp()
    pruner = pruned_pruner(model)
    optimizers = []
    for seed in range(2):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        PrunerHook(pruner, model, optimizer)  # no remove(), no context manager
        step(model, optimizer, mlp_batch(seed=seed))
        optimizers.append(weakref.ref(optimizer))
        del optimizer
    gc.collect()
    assert [ref() for ref in optimizers] == [None, None]
    step(model, torch.optim.SGD(model.parameters(), lr=0.1), mlp_batch())  # nothing stale runs


def test_load_state_dict_cannot_bring_pruned_weights_back() -> None:
    """Loading dense weights (a checkpoint from before pruning) while the hook is on used to
    leave the pruned entries dense until the next optimizer step: an evaluation or checkpoint in
    between saw the dense model."""
    model = make_convnet()
    dense = copy.deepcopy(model.state_dict())
    pruner = pruned_pruner(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    expected = pruned_counts(pruner)
    with PrunerHook(pruner, model, optimizer):
        with pytest.warns(UserWarning, match=r"load the pruner's state before") as caught:
            model.load_state_dict(dense)
        assert len(caught) == 1 and caught[0].filename == __file__
        assert f"into {sum(expected)} pruned entries" in str(caught[0].message)
        assert zero_counts(pruner, model) == expected
        with pytest.warns(UserWarning, match="pruned entries"):
            nn.DataParallel(model).load_state_dict({f"module.{k}": v for k, v in dense.items()})
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model.load_state_dict(copy.deepcopy(model.state_dict()))  # a ticket: nothing to say
        model.conv1.load_state_dict({"weight": dense["conv1.weight"], "bias": dense["conv1.bias"]})
        assert zero_counts(pruner, model) == expected
        assert torch.equal(model.conv1.bias, dense["conv1.bias"])  # the rest is loaded as is
        with pytest.warns(UserWarning, match=r"'conv1.weight'"):  # the layer's own load
            step(model, optimizer, conv_batch())
    model.load_state_dict(dense)  # the hook is removed: nothing is masked any more
    assert zero_counts(pruner, model) == [0] * len(expected)


def test_parameters_unfrozen_later_get_masked_gradients() -> None:
    """Gradual unfreezing: a frozen tensor cannot take a gradient hook when the PrunerHook is
    created; it gets one after the first step (or refresh()) that finds it trainable."""
    model = make_mlp()
    model[0].weight.requires_grad_(False)
    pruner = LotteryTicketPruner(model, prunable=["0.weight", "2.2.weight"])
    pruner.calc_prune_mask(model, 0.5, "random")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    pruned = ~torch.from_numpy(pruner.masks[0])
    with PrunerHook(pruner, model, optimizer) as hook:
        step(model, optimizer, mlp_batch())
        model[0].weight.requires_grad_(True)
        step(model, optimizer, mlp_batch(seed=1))  # the hook goes on after this step
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(mlp_batch()[0]), mlp_batch()[1]).backward()
        assert bool((model[0].weight.grad[pruned] == 0).all())
        model[2][2].weight.requires_grad_(False)
        model[2][2].weight.requires_grad_(True)
        hook.refresh()  # nothing new to hook: refresh is idempotent
    assert zero_counts(pruner, model) == pruned_counts(pruner)


@pytest.mark.parametrize("optimizer_name", ["adam", "sgd_momentum_wd"])
def test_gradient_masking_changes_nothing_for_element_wise_optimizers(optimizer_name: str) -> None:
    """Without clipping, element-wise optimizers train the kept weights bit for bit the same
    with or without gradient masking (so `ltp imp` results and the documented tables hold)."""
    base = make_mlp()
    pruner = pruned_pruner(base, 0.7)
    pruner.apply_pruning(base)
    trained = []
    for mask_gradients in (True, False):
        model = copy.deepcopy(base)
        optimizer = OPTIMIZERS[optimizer_name](list(model.parameters()))
        with PrunerHook(pruner, model, optimizer, mask_gradients=mask_gradients):
            for i in range(5):
                step(model, optimizer, mlp_batch(seed=i))
        trained.append(list(model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(*trained, strict=True))


def test_mask_gradients_false_leaves_gradients_dense() -> None:
    model = make_mlp()
    pruner = pruned_pruner(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = mlp_batch()

    def pruned_gradients_all_zero() -> bool:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        parameters = pruner.parameters(model)
        return all(
            bool((p.grad[~torch.from_numpy(m)] == 0).all())
            for p, m in zip(parameters, pruner.masks, strict=True)
        )

    with PrunerHook(pruner, model, optimizer):
        assert pruned_gradients_all_zero()
    assert not pruned_gradients_all_zero()  # removing the hook removes the gradient masking
    with PrunerHook(pruner, model, optimizer, mask_gradients=False):
        assert not pruned_gradients_all_zero()


def test_refresh_applies_new_masks_at_once() -> None:
    model = make_mlp()
    pruner = pruned_pruner(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    with PrunerHook(pruner, model, optimizer) as hook:
        step(model, optimizer, mlp_batch())
        pruner.calc_prune_mask(model, 0.5, "smallest_weights")
        assert zero_counts(pruner, model) != pruned_counts(pruner)  # not yet applied
        hook.refresh()
        assert zero_counts(pruner, model) == pruned_counts(pruner)
        assert assert_state_zero_where_pruned(pruner, model, optimizer) == 3


def test_zero_optimizer_state_can_be_disabled() -> None:
    model = make_mlp()
    pruner = LotteryTicketPruner(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    step(model, optimizer, mlp_batch())
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    momentum = [optimizer.state[p]["momentum_buffer"].clone() for p in pruner.parameters(model)]
    with PrunerHook(pruner, model, optimizer, zero_optimizer_state=False):
        assert zero_counts(pruner, model) == pruned_counts(pruner)
        for parameter, before in zip(pruner.parameters(model), momentum, strict=True):
            assert torch.equal(optimizer.state[parameter]["momentum_buffer"], before)


def test_parameters_replaced_after_the_hook_are_masked_with_a_warning() -> None:
    """A layer replaced while the hook is on (a new head, ``layer.weight = nn.Parameter(...)``)
    used to train dense, silently: the hook kept zeroing the old objects."""
    model = make_mlp()
    pruner = pruned_pruner(model)
    expected = pruned_counts(pruner)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    with PrunerHook(pruner, model, optimizer) as hook:
        model[2][2] = nn.Linear(8, 3)  # a new head of the same shape, trained from now on
        optimizer.add_param_group({"params": list(model[2][2].parameters())})
        with pytest.warns(UserWarning, match=r"\['2.2.weight'\] were replaced") as caught:
            step(model, optimizer, mlp_batch())
        assert "does not update" not in str(caught[0].message)
        assert zero_counts(pruner, model) == expected
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # said once
            for seed in range(3):
                step(model, optimizer, mlp_batch(seed))
                assert zero_counts(pruner, model) == expected
                head = model[2][2].weight
                assert bool((head.grad[~torch.from_numpy(pruner.masks[2])] == 0).all())
        assert_state_zero_where_pruned(pruner, model, optimizer)

        # load_state_dict(assign=True) swaps in new objects the optimizer does not hold.
        dense = {k: v.clone() + 1 for k, v in make_mlp(1).state_dict().items()}
        with pytest.warns(UserWarning, match="pruned entries"):  # zeroed by the load hooks
            model.load_state_dict(dense, assign=True)
        with pytest.warns(UserWarning, match=r"optimizer does not update \['0.weight'"):
            hook.refresh()
        assert zero_counts(pruner, model) == expected

        model[0] = nn.Linear(12, 5)  # no longer the pruner's architecture: an error, not silence
        with pytest.raises(ValueError, match=r"'0.weight' has shape \(5, 12\)"):
            optimizer.step()


def test_copies_and_pickles_of_a_hooked_model_are_not_masked() -> None:
    """The load_state_dict hooks travelled with ``copy.deepcopy`` of the model (a best-model
    snapshot, ``AveragedModel``, a dense baseline): loading dense weights into the copy zeroed
    them, with a warning about the PrunerHook, even after ``hook.remove()``. And
    ``pickle``/``torch.save(model)`` failed on a local function while the hook was on."""
    model = make_mlp()
    dense = copy.deepcopy(model.state_dict())
    pruner = pruned_pruner(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    expected = pruned_counts(pruner)
    hook = PrunerHook(pruner, model, optimizer)
    snapshot = copy.deepcopy(model)
    averaged = torch.optim.swa_utils.AveragedModel(model)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    unpickled = torch.load(buffer, weights_only=False)
    restored = pickle.loads(pickle.dumps(model))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for copied in (snapshot, averaged.module, unpickled, restored):
            assert zero_counts(pruner, copied) == expected  # copied as they were: pruned
            copied.load_state_dict(dense)
            assert zero_counts(pruner, copied) == [0] * len(expected)  # a copy is not masked
    with pytest.warns(UserWarning, match="pruned entries"):  # the hooked model still is
        model.load_state_dict(dense)
    assert zero_counts(pruner, model) == expected
    hook.remove()
    copy.deepcopy(model).load_state_dict(dense)  # nothing left behind either


def test_lbfgs_history_from_other_masks_cannot_move_pruned_weights() -> None:
    """LBFGS keeps flat curvature pairs: a history recorded before pruning made every later
    direction move the pruned weights during the inner iterations of ``step(closure)``, so the
    closure's loss was taken with them back (36 of 36 in every evaluation but the first of each
    step) and the post-step mask hid it."""
    model = make_mlp()
    x, y = mlp_batch()
    pruner = LotteryTicketPruner(model)
    optimizer = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=4, history_size=4)
    revived: list[int] = []

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        if pruner.level:
            revived.append(sum(zero_counts(pruner, model)) - sum(pruned_counts(pruner)))
        return loss

    for _ in range(2):  # dense training: a history over every entry
        optimizer.step(closure)
    pruner.set_pretrained_weights(model)
    pruner.calc_prune_mask(model, 0.5, "large_final")
    with PrunerHook(pruner, model, optimizer) as hook:
        for _ in range(2):
            optimizer.step(closure)
        pruner.calc_prune_mask(model, 0.5, "large_final")  # a mask change while training
        hook.refresh()
        for _ in range(2):
            optimizer.step(closure)
    assert len(revived) > 8
    assert all(count >= 0 for count in revived), revived  # every pruned weight zero each time
    assert zero_counts(pruner, model) == pruned_counts(pruner)


def test_lbfgs_history_within_the_masks_survives_a_refresh() -> None:
    """Reloading the same masks (a resumed run: ``load_checkpoint``, ``set_masks``) keeps a
    history built under them, so the run continues exactly as uninterrupted."""
    x, y = mlp_batch()
    finals = []
    for reload in (False, True):
        model = make_mlp()
        pruner = pruned_pruner(model)
        optimizer = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=3)

        def closure(
            model: nn.Module = model, optimizer: torch.optim.Optimizer = optimizer
        ) -> torch.Tensor:
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss

        with PrunerHook(pruner, model, optimizer) as hook:
            for index in range(4):
                optimizer.step(closure)
                if reload and index == 1:
                    pruner.set_masks(pruner.masks)
                    hook.refresh()
                    assert len(optimizer.state[next(model.parameters())]["old_dirs"]) > 0
        finals.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*finals, strict=True))
