"""Role-based default selection, named selectors, parametrized weights, summary() and coverage."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations, parametrize

from ltp_core.experiment.models import MODEL_SPECS
from ltp_core.notices import LowCoverageWarning, ParametrizationWarning
from ltp_torch import LotteryTicketPruner, PrunerHook, selectors
from ltp_torch.masking import mask_tensors, zero_optimizer_state_
from ltp_torch.models import build_model
from ltp_torch.parameters import find_prunable_parameters
from ltp_torch.roles import describe_parameters


def names_of(module: nn.Module, prunable: object = None) -> list[str]:
    return [name for name, _ in find_prunable_parameters(module, prunable)]  # type: ignore[arg-type]


def roles_of(module: nn.Module) -> dict[str, str]:
    return {info.name: info.role for info in describe_parameters(module)}


class Conv1D(nn.Module):
    """Hugging Face's Conv1D as transformers defines it: weight (in, out), ``nf`` outputs."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.1)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight)


class PositionalNet(nn.Module):
    """A ViT-like module with its own tables and scales next to known layers."""

    def __init__(self) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, 5, 8))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 8))
        self.temperature = nn.Parameter(torch.ones(()))
        self.gamma = nn.Parameter(torch.ones(8))
        self.relative_bias = nn.Parameter(torch.zeros(4, 4))
        self.proj = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.prelu = nn.PReLU()


# -- roles --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layer", "expected"),
    [
        (nn.Linear(3, 2), {"weight": "linear"}),
        (nn.Bilinear(3, 4, 2), {"weight": "linear"}),
        (nn.Conv1d(2, 4, 3), {"weight": "conv"}),
        (nn.Conv2d(4, 4, 3, groups=4), {"weight": "conv"}),  # depthwise
        (nn.Conv3d(4, 6, 1, groups=2), {"weight": "conv"}),  # grouped
        (nn.ConvTranspose1d(2, 2, 3), {"weight": "conv_transpose"}),
        (nn.ConvTranspose2d(2, 4, 3, groups=2), {"weight": "conv_transpose"}),
        (nn.ConvTranspose3d(2, 2, 3), {"weight": "conv_transpose"}),
        (
            nn.MultiheadAttention(8, 2),
            {"in_proj_weight": "attention", "out_proj.weight": "attention"},
        ),
        (
            nn.MultiheadAttention(8, 2, kdim=4, vdim=6, add_bias_kv=True),
            {
                "q_proj_weight": "attention",
                "k_proj_weight": "attention",
                "v_proj_weight": "attention",
                "out_proj.weight": "attention",
            },
        ),
        (
            nn.GRU(3, 4, num_layers=2, bidirectional=True),
            {
                f"weight_{kind}_l{layer}{suffix}": "recurrent"
                for layer in (0, 1)
                for suffix in ("", "_reverse")
                for kind in ("ih", "hh")
            },
        ),
        (
            nn.LSTM(3, 4, proj_size=2),
            {"weight_ih_l0": "recurrent", "weight_hh_l0": "recurrent", "weight_hr_l0": "recurrent"},
        ),
        (nn.RNN(3, 4), {"weight_ih_l0": "recurrent", "weight_hh_l0": "recurrent"}),
        (nn.LSTMCell(3, 4), {"weight_ih": "recurrent", "weight_hh": "recurrent"}),
        (nn.GRUCell(3, 4), {"weight_ih": "recurrent", "weight_hh": "recurrent"}),
        (nn.RNNCell(3, 4), {"weight_ih": "recurrent", "weight_hh": "recurrent"}),
        (Conv1D(6, 4), {"weight": "hf_conv1d"}),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else "",
)
def test_default_prunes_the_weights_of_each_layer_type(
    layer: nn.Module, expected: dict[str, str]
) -> None:
    roles = roles_of(layer)
    assert {n: r for n, r in roles.items() if r not in ("bias",)} == expected
    assert names_of(layer) == [n for n in roles if n in expected]
    assert all(roles[n] == "bias" for n in roles if n not in expected)


def test_left_out_reasons() -> None:
    model = PositionalNet()
    assert roles_of(model) == {
        "pos_embed": "positional or other parameter",
        "cls_token": "positional or other parameter",
        "temperature": "scalar",
        "gamma": "per-channel scale",
        "relative_bias": "bias",  # a 2-D bias is still a bias
        "proj.weight": "linear",
        "proj.bias": "bias",
        "norm.weight": "normalization",
        "norm.bias": "normalization",
        "prelu.weight": "scalar",
    }
    assert names_of(model) == ["proj.weight"]
    assert names_of(model, "all_matrices") == ["pos_embed", "cls_token", "proj.weight"]
    norms = nn.Sequential(
        nn.BatchNorm2d(3), nn.GroupNorm(1, 3), nn.RMSNorm(3), nn.InstanceNorm1d(3, affine=True)
    )
    assert set(roles_of(norms).values()) == {"normalization"}
    embeddings = nn.ModuleDict({"a": nn.Embedding(5, 3), "b": nn.EmbeddingBag(5, 3)})
    assert set(roles_of(embeddings).values()) == {"embedding"}


def test_conv1d_lookalikes_need_nf_and_matching_weight() -> None:
    fake = Conv1D(6, 4)
    fake.nf = 5  # columns no longer match
    assert roles_of(fake)["weight"] == "positional or other parameter"


class TinyExperts(nn.Module):
    """The layout of transformers 5's stacked mixture-of-experts weights (GPT-OSS style, with
    biases), recognised by class name and rank like Conv1D."""

    def __init__(self, experts: int = 4) -> None:
        super().__init__()
        self.num_experts = experts
        self.gate_up_proj = nn.Parameter(torch.randn(experts, 8, 6))
        self.gate_up_proj_bias = nn.Parameter(torch.zeros(experts, 6))
        self.down_proj = nn.Parameter(torch.randn(experts, 6, 8))


class TinyRouter(nn.Module):
    def __init__(self, experts: int = 4) -> None:
        super().__init__()
        self.num_experts = experts
        self.weight = nn.Parameter(torch.randn(experts, 8))
        self.bias = nn.Parameter(torch.zeros(experts))


def test_mixture_of_experts_stacked_weights_and_router() -> None:
    moe = nn.ModuleDict({"router": TinyRouter(), "experts": TinyExperts()})
    assert roles_of(moe) == {
        "router.weight": "linear",
        "router.bias": "bias",
        "experts.gate_up_proj": "experts",
        "experts.gate_up_proj_bias": "bias",
        "experts.down_proj": "experts",
    }
    pruner = LotteryTicketPruner(moe)
    assert pruner.kinds == ["dense", "native", "native"]
    # Judged by class name and rank, as transformers names them (whatever counts the experts).
    lookalike = type("ExpertStack", (nn.Module,), {})()
    lookalike.w = nn.Parameter(torch.randn(4, 8, 6))
    lookalike.matrix = nn.Parameter(torch.randn(8, 6))
    assert roles_of(lookalike) == {
        "w": "positional or other parameter",
        "matrix": "positional or other parameter",
    }
    flat = TinyExperts()
    flat.scale = nn.Parameter(torch.ones(4, 6))  # 2-D: not a stack of matrices
    assert roles_of(flat)["scale"] == "positional or other parameter"


def test_hf_conv1d_is_recognised_without_importing_transformers() -> None:
    code = (
        "import sys, torch\n"
        "from torch import nn\n"
        "from ltp_torch import LotteryTicketPruner\n"
        "class Conv1D(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__(); self.nf = 3\n"
        "        self.weight = nn.Parameter(torch.ones(2, 3))\n"
        "print(LotteryTicketPruner(Conv1D()).roles, 'transformers' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "['hf_conv1d'] False"


# -- ties and selectors ------------------------------------------------------------------------


class TiedLM(nn.Module):
    def __init__(self, head_first: bool = False) -> None:
        super().__init__()
        if head_first:
            self.head = nn.Linear(8, 20, bias=False)
            self.embed = nn.Embedding(20, 8)
        else:
            self.embed = nn.Embedding(20, 8)
            self.head = nn.Linear(8, 20, bias=False)
        self.head.weight = self.embed.weight
        self.body = nn.Linear(8, 8)


@pytest.mark.parametrize("head_first", [False, True])
def test_a_tensor_tied_to_an_embedding_is_left_out(head_first: bool) -> None:
    model = TiedLM(head_first)
    tied = "head.weight" if head_first else "embed.weight"
    assert roles_of(model)[tied] == "tied to embedding"
    assert names_of(model) == ["body.weight"]
    assert names_of(model, "with_embeddings") == [tied, "body.weight"]
    # A selector used inside a user's predicate still sees the tie, under either name.
    assert names_of(model, lambda n, m, p: selectors.default(n, m, p)) == ["body.weight"]


def test_selectors_by_name_object_and_predicate() -> None:
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4), nn.LayerNorm(4))
    assert names_of(model, "default") == names_of(model, selectors.default) == ["1.weight"]
    assert names_of(model, selectors.with_embeddings) == ["0.weight", "1.weight"]
    assert list(selectors.SELECTORS) == [
        "default",
        "with_embeddings",
        "all_matrices",
        "linear_and_conv",
    ]
    # Outside a scan a selector judges by the owning module alone.
    assert selectors.default("weight", model[1], model[1].weight)
    assert not selectors.default("weight", model[0], model[0].weight)
    assert selectors.with_embeddings("weight", model[0], model[0].weight)
    assert repr(selectors.all_matrices) == "ltp_torch.selectors.all_matrices"


def test_frozen_parameters_are_left_out_except_by_linear_and_conv() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)
    assert names_of(model) == ["1.weight"]
    with pytest.raises(
        ValueError, match=r"Left out: frozen \(requires_grad=False\) \['0.weight'\]"
    ):
        names_of(model[:1])
    assert names_of(model, "linear_and_conv") == ["0.weight", "1.weight"]
    reasons = {t.name: t.reason for t in LotteryTicketPruner(model).summary().left_out}
    assert reasons["0.weight"] == "frozen (requires_grad=False)"


@pytest.mark.parametrize("name", sorted(MODEL_SPECS))
def test_builtin_models_select_the_same_tensors_as_before(name: str) -> None:
    expected = {
        "lenet300_100": ["1.weight", "3.weight", "5.weight"],
        "conv2": ["0.weight", "2.weight", "6.weight", "8.weight", "10.weight"],
        "conv4": ["0.weight", "2.weight", "5.weight", "7.weight", "11.weight", "13.weight",
                  "15.weight"],
        "conv6": ["0.weight", "2.weight", "5.weight", "7.weight", "10.weight", "12.weight",
                  "16.weight", "18.weight", "20.weight"],
        "mnist_cnn": ["0.weight", "2.weight", "7.weight", "10.weight"],
    }  # fmt: skip
    shape = (32, 32, 3) if name.startswith("conv") else (28, 28, 1)
    model = build_model(name, shape, 10, seed=0)
    assert names_of(model) == names_of(model, "linear_and_conv") == expected[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # full coverage: no warning
        assert LotteryTicketPruner(model).summary().coverage > 0.99


# -- parametrized weights ----------------------------------------------------------------------


class Scale(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 * x


class Shift(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1.0


def parametrized_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        parametrizations.weight_norm(nn.Linear(6, 8)),
        nn.ReLU(),
        parametrizations.spectral_norm(nn.Linear(8, 8)),
        nn.ReLU(),
        nn.Linear(8, 3),
    )
    parametrize.register_parametrization(net[4], "weight", Scale())
    return net


def test_parametrized_weights_are_pruned_through_the_trained_original() -> None:
    net = parametrized_net()
    pruner = LotteryTicketPruner(net)
    assert pruner.names == [
        "0.parametrizations.weight.original1",
        "2.parametrizations.weight.original",
        "4.parametrizations.weight.original",
    ]
    assert pruner.roles == ["linear (weight_norm)", "linear (spectral_norm)", "linear (Scale)"]
    assert pruner.kinds == ["dense", "dense", "dense"]
    reasons = {t.name: t.reason for t in pruner.summary().left_out}
    assert reasons["0.parametrizations.weight.original0"].startswith("parametrization input")

    pruner.calc_prune_mask(net, 0.5, "random")
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    generator = torch.Generator().manual_seed(1)
    with PrunerHook(pruner, net, optimizer):
        for _ in range(4):
            optimizer.zero_grad()
            net(torch.randn(16, 6, generator=generator)).pow(2).mean().backward()
            optimizer.step()
            for layer, mask in zip((net[0], net[2], net[4]), pruner.masks, strict=True):
                effective = layer.weight.detach()  # computed by the parametrization
                assert torch.isfinite(effective).all()
                assert bool((effective[torch.from_numpy(~mask)] == 0).all())
                assert int((effective != 0).sum()) == int(mask.sum())


def test_a_parametrization_that_does_not_keep_zeros_warns() -> None:
    net = nn.Sequential(nn.Linear(4, 4))
    parametrize.register_parametrization(net[0], "weight", Shift())
    with pytest.warns(ParametrizationWarning, match=r"'Shift'.*does not keep zeros") as caught:
        LotteryTicketPruner(net)
    assert caught[0].filename == __file__


def test_weight_norm_rows_emptied_warn() -> None:
    net = nn.Sequential(parametrizations.weight_norm(nn.Linear(4, 3)))
    pruner = LotteryTicketPruner(net)
    masks = [np.ones((3, 4), bool)]
    masks[0][1] = False  # a whole output row
    with pytest.warns(ParametrizationWarning, match=r"original1' \(1 rows\).*NaN") as caught:
        pruner.set_masks(masks)
    assert caught[0].filename == __file__
    pruner.apply_pruning(net)
    assert torch.isnan(net[0].weight[1]).all()  # what the warning is about
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        masks[0][1, 0] = True
        pruner.set_masks(masks)


def test_scores_of_rescaled_originals_warn_when_their_ranking_differs() -> None:
    """The pruner ranks the originals that train; weight_norm rescales each row of its
    direction (g/||v||), spectral_norm the whole tensor (1/sigma). Magnitude pruning of the
    originals then silently differed from magnitude pruning of the weights the layers use."""
    torch.manual_seed(0)
    net = nn.Sequential(
        parametrizations.weight_norm(nn.Linear(6, 8)),
        parametrizations.spectral_norm(nn.Linear(8, 8)),
        nn.Linear(8, 2),
    )
    with torch.no_grad():  # as training does: g and ||v|| drift apart row by row
        net[0].parametrizations.weight.original0.mul_(torch.linspace(0.2, 5.0, 8)[:, None])
    effective = net[0].weight.detach().abs()
    pruner = LotteryTicketPruner(net)
    pruner.set_pretrained_weights(net)

    def warned(strategy: str) -> list[str]:
        pruner.reset_masks()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pruner.calc_prune_mask(net, 0.5, strategy)
        assert all(w.filename == __file__ for w in caught)
        return [str(w.message) for w in caught if w.category is ParametrizationWarning]

    (message,) = warned("large_final")
    assert "'0.parametrizations.weight.original1' (weight_norm)" in message
    assert "spectral_norm" not in message.split(" are computed")[0]  # one scale: same ranking
    by_effective = effective > effective.flatten().median()
    assert not torch.equal(torch.from_numpy(pruner.masks[0]), by_effective)  # what it is about
    (message,) = warned("large_final_global")  # 1/sigma changes the layer against the others
    assert "'1.parametrizations.weight.original' (spectral_norm)" in message
    assert warned("random") == [] and warned("random_global") == []


def test_old_hook_based_weight_norm_and_spectral_norm() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        net = nn.Sequential(
            torch.nn.utils.weight_norm(nn.Linear(4, 4)),
            torch.nn.utils.spectral_norm(nn.Conv1d(2, 2, 3)),
        )
    assert names_of(net) == ["0.weight_v", "1.weight_orig"]
    assert roles_of(net)["0.weight_g"].startswith("parametrization input")
    attention = nn.MultiheadAttention(4, 2)
    parametrizations.weight_norm(attention.out_proj)
    torch.nn.utils.prune.random_unstructured(attention, "in_proj_weight", amount=0.5)
    assert LotteryTicketPruner(attention).roles == [
        "attention (torch.nn.utils.prune)",
        "attention (weight_norm)",
    ]


def test_layers_under_torch_nn_utils_prune_are_pruned_through_weight_orig() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))
    torch.nn.utils.prune.l1_unstructured(net[0], "weight", amount=0.25)
    pruner = LotteryTicketPruner(net)
    assert pruner.names == ["0.weight_orig", "2.weight"]
    assert pruner.roles == ["linear (torch.nn.utils.prune)", "linear"]
    pruner.calc_prune_mask(net, 0.5, "random")
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    with PrunerHook(pruner, net, optimizer):
        optimizer.zero_grad()
        net(torch.randn(3, 6)).sum().backward()
        optimizer.step()
    net(torch.randn(1, 6))  # the prune hook recomputes weight = weight_orig * weight_mask
    weight = net[0].weight.detach()
    assert bool((weight[torch.from_numpy(~pruner.masks[0])] == 0).all())


# -- summary and coverage ----------------------------------------------------------------------


def test_summary_lists_roles_counts_and_reasons() -> None:
    model = TiedLM()
    pruner = LotteryTicketPruner(model, prunable="with_embeddings")
    pruner.calc_prune_mask(model, 0.25, "smallest_weights")
    summary = pruner.summary()
    assert [(t.name, t.kind, t.count, t.kept) for t in summary.prunable] == [
        ("embed.weight", "embedding (tied)", 160, 120),
        ("body.weight", "linear", 64, 48),
    ]
    assert {t.name: t.reason for t in summary.left_out} == {"body.bias": "bias"}
    assert "embedding (tied)" in summary.to_text()


def test_low_coverage_warns_with_torch_advice() -> None:
    model = nn.Sequential(nn.Embedding(1000, 16), nn.Linear(16, 4))
    with pytest.warns(LowCoverageWarning, match=r'prunable="with_embeddings"') as caught:
        LotteryTicketPruner(model)
    assert "embedding: 16000" in str(caught[0].message)
    assert caught[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LotteryTicketPruner(model, prunable="with_embeddings")
        model[0].weight.requires_grad_(False)  # frozen parameters do not count
        LotteryTicketPruner(model)


# -- zeros whatever the step did (issue 13 item 3) ------------------------------------------------


def test_pruned_entries_are_exact_zero_after_an_overflowed_step() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4))
    pruner = LotteryTicketPruner(model)
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    pruned = torch.from_numpy(~pruner.masks[0])
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9)
    with PrunerHook(pruner, model, optimizer):
        optimizer.zero_grad()
        model(torch.ones(1, 4)).sum().backward()
        model[0].weight.grad[pruned] = float("inf")  # an overflow at pruned entries
        kept_before = model[0].weight.detach().clone()
        optimizer.step()
        weight = model[0].weight.detach()
        assert torch.equal(weight[pruned], torch.zeros(int(pruned.sum())))
        assert not torch.signbit(weight[pruned]).any()  # +0.0, not -0.0
        expected = kept_before - model[0].weight.grad  # lr=1, first momentum step
        assert torch.equal(weight[~pruned], expected[~pruned])
        momentum = optimizer.state[model[0].weight]["momentum_buffer"]
        momentum[pruned] = float("nan")
        zero_optimizer_state_(optimizer, [model[0].weight], pruner.mask_tensors([weight]))
        assert torch.equal(momentum[pruned], torch.zeros(int(pruned.sum())))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_apply_pruning_zeroes_inf_and_nan_in_every_dtype(dtype: torch.dtype) -> None:
    model = nn.Sequential(nn.Linear(3, 2)).to(dtype)
    pruner = LotteryTicketPruner(model)
    pruner.set_masks([np.array([[False, True, False], [True, False, True]])])
    with torch.no_grad():
        model[0].weight.copy_(
            torch.tensor([[float("inf"), 1.5, float("nan")], [-2.0, -float("inf"), 0.25]])
        )
    pruner.apply_pruning(model)
    expected = torch.tensor([[0.0, 1.5, 0.0], [-2.0, 0.0, 0.25]], dtype=dtype)
    assert torch.equal(model[0].weight.detach(), expected)
    assert (
        mask_tensors(pruner.masks, [model[0].weight])[0].element_size() == expected.element_size()
    )


def test_native_layout_masks_are_not_mapped_to_keras_layout(tmp_path: object) -> None:
    from pathlib import Path

    from ltp_core import io as core_io

    # An LSTM with proj_size has weight_hr, which no Keras layer has: a Keras-layout file
    # must not be copied onto it.
    model = nn.LSTM(8, 4, proj_size=2)
    pruner = LotteryTicketPruner(model)
    assert pruner.kinds == ["native", "native", "native"]
    path = Path(str(tmp_path)) / "keras_masks.npz"
    masks = [np.ones(tuple(reversed(m.shape)), bool) for m in pruner.masks]
    core_io.save_masks(path, masks, ["a", "b", "c"], layout="keras", kinds=["other"] * 3)
    with pytest.raises(ValueError, match=r"kind 'native'.*cannot be mapped from keras to torch"):
        pruner.load_masks(path)
    assert pruner.level == 0 and all(m.all() for m in pruner.masks)
    pruner.save_masks(path)  # the same layout loads as before
    LotteryTicketPruner(nn.LSTM(8, 4, proj_size=2)).load_masks(path)


@pytest.mark.parametrize("case", ["lstm_rnn", "gru"])
def test_recurrent_weights_are_keras_kernels_transposed(case: str, tmp_path: object) -> None:
    from pathlib import Path

    from ltp_core import io as core_io

    # LSTM and RNN: the same gate order; GRU: torch orders its gates (reset, update, new),
    # Keras (update, reset, new), so the first two gate blocks are swapped too
    if case == "gru":
        model = nn.Sequential(nn.GRU(16, 4, num_layers=2, bidirectional=True))
        kind, count, cell = "gru", 8, nn.GRUCell(5, 2)
    else:
        model = nn.Sequential(nn.LSTM(16, 4, num_layers=2, bidirectional=True), nn.RNN(8, 3))
        kind, count, cell = "dense", 10, nn.LSTMCell(5, 2)
    pruner = LotteryTicketPruner(model)
    assert pruner.kinds == [kind] * count
    assert LotteryTicketPruner(cell).kinds == [kind, kind]
    rng = np.random.default_rng(0)
    keras_masks = [rng.random(tuple(reversed(m.shape))) < 0.5 for m in pruner.masks]
    path = Path(str(tmp_path)) / "keras_masks.npz"
    names = [f"k{i}" for i in range(count)]
    core_io.save_masks(path, keras_masks, names, layout="keras", kinds=[kind] * count)
    pruner.load_masks(path)
    for ours, theirs in zip(pruner.masks, keras_masks, strict=True):
        if kind == "gru":
            update, reset, new = np.split(theirs, 3, axis=1)
            theirs = np.concatenate([reset, update, new], axis=1)
        np.testing.assert_array_equal(ours, theirs.T)
    if kind == "gru":  # recorded as "other" (a file from before the kind): refused, not guessed
        core_io.save_masks(path, keras_masks, names, layout="keras", kinds=["other"] * count)
        before = [m.copy() for m in pruner.masks]
        with pytest.raises(ValueError, match="kind"):
            pruner.load_masks(path)
        assert all(np.array_equal(a, b) for a, b in zip(before, pruner.masks, strict=True))
