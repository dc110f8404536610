"""Model zoo: the default selection on the architectures people prune, end to end.

Every model is built with random init and tiny inputs (no downloads). Each case checks the exact
selected names, the exact number of weights pruned, exact zeros in the *effective* weights after
training steps with ``PrunerHook``, rewinding in place (same parameter objects, initial values,
pruned entries zero), and that a global selection never empties a layer without a
``LayerCollapseWarning``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations

from ltp_core.notices import LayerCollapseWarning
from ltp_torch import LotteryTicketPruner, PrunerHook


@dataclass
class Case:
    model: nn.Module
    loss: Callable[[nn.Module, torch.Generator], torch.Tensor]
    expected: list[str]


# -- torch.nn models ---------------------------------------------------------------------------


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).mean(1))


def transformer_encoder() -> Case:
    per_layer = ["self_attn.in_proj_weight", "self_attn.out_proj.weight"]
    per_layer += ["linear1.weight", "linear2.weight"]
    return Case(
        Encoder(),
        lambda m, g: m(torch.randn(4, 5, 16, generator=g)).pow(2).mean(),
        [f"encoder.layers.{i}.{n}" for i in (0, 1) for n in per_layer] + ["head.weight"],
    )


class CrossAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 2, kdim=8, vdim=12, batch_first=True)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.attn(q, k, v, need_weights=False)[0]


def mha_kdim_vdim() -> Case:
    def loss(m: nn.Module, g: torch.Generator) -> torch.Tensor:
        q = torch.randn(4, 5, 16, generator=g)
        k, v = torch.randn(4, 6, 8, generator=g), torch.randn(4, 6, 12, generator=g)
        return m(q, k, v).pow(2).mean()

    names = ["q_proj_weight", "k_proj_weight", "v_proj_weight", "out_proj.weight"]
    return Case(CrossAttention(), loss, [f"attn.{n}" for n in names])


class Recurrent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(6, 8, num_layers=2, bidirectional=True, batch_first=True)
        self.gru = nn.GRU(16, 8, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(x)
        h, _ = self.gru(h)
        return self.head(h[:, -1])


def lstm_gru() -> Case:
    lstm = [
        f"lstm.weight_{kind}_l{layer}{suffix}"
        for layer in (0, 1)
        for suffix in ("", "_reverse")
        for kind in ("ih", "hh")
    ]
    return Case(
        Recurrent(),
        lambda m, g: m(torch.randn(4, 5, 6, generator=g)).pow(2).mean(),
        [*lstm, "gru.weight_ih_l0", "gru.weight_hh_l0", "head.weight"],
    )


def separable_cnn() -> Case:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depthwise
        nn.Conv2d(8, 16, 1),  # pointwise
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 4),
    )
    return Case(
        model,
        lambda m, g: m(torch.randn(4, 3, 8, 8, generator=g)).pow(2).mean(),
        ["0.weight", "3.weight", "4.weight", "9.weight"],
    )


def weight_and_spectral_norm() -> Case:
    model = nn.Sequential(
        parametrizations.weight_norm(nn.Conv1d(3, 6, 3)),
        nn.ReLU(),
        nn.Flatten(),
        parametrizations.spectral_norm(nn.Linear(36, 8)),
        nn.ReLU(),
        parametrizations.weight_norm(nn.Linear(8, 3)),
    )
    return Case(
        model,
        lambda m, g: m(torch.randn(4, 3, 8, generator=g)).pow(2).mean(),
        [
            "0.parametrizations.weight.original1",
            "3.parametrizations.weight.original",
            "5.parametrizations.weight.original1",
        ],
    )


class TiedLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(30, 16)
        self.rnn = nn.GRU(16, 16, batch_first=True)
        self.decoder = nn.Linear(16, 30)
        self.decoder.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.rnn(self.embed(tokens))[0])


def tied_lm() -> Case:
    def loss(m: nn.Module, g: torch.Generator) -> torch.Tensor:
        tokens = torch.randint(0, 30, (4, 6), generator=g)
        logits = m(tokens[:, :-1]).reshape(-1, 30)
        return nn.functional.cross_entropy(logits, tokens[:, 1:].reshape(-1))

    return Case(TiedLM(), loss, ["rnn.weight_ih_l0", "rnn.weight_hh_l0"])


# -- Hugging Face transformers, tiny configs -----------------------------------------------------


def gpt2() -> Case:
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        n_layer=2, n_embd=16, n_head=2, vocab_size=40, n_positions=16, bos_token_id=0,
        eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    model = transformers.GPT2LMHeadModel(config)

    def loss(m: nn.Module, g: torch.Generator) -> torch.Tensor:
        ids = torch.randint(0, 40, (2, 8), generator=g)
        return m(input_ids=ids, labels=ids).loss

    per_block = ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]
    names = [f"transformer.h.{i}.{n}.weight" for i in (0, 1) for n in per_block]
    return Case(model, loss, names)


def bert() -> Case:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        num_hidden_layers=1, hidden_size=16, num_attention_heads=2, intermediate_size=32,
        vocab_size=40, max_position_embeddings=16, num_labels=3, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    model = transformers.BertForSequenceClassification(config)

    def loss(m: nn.Module, g: torch.Generator) -> torch.Tensor:
        ids = torch.randint(0, 40, (2, 8), generator=g)
        return m(input_ids=ids, labels=torch.randint(0, 3, (2,), generator=g)).loss

    layer = "bert.encoder.layer.0"
    names = [f"{layer}.attention.self.{n}.weight" for n in ("query", "key", "value")]
    names += [f"{layer}.{n}.dense.weight" for n in ("attention.output", "intermediate", "output")]
    return Case(model, loss, [*names, "bert.pooler.dense.weight", "classifier.weight"])


def vit() -> Case:
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        num_hidden_layers=1, hidden_size=16, num_attention_heads=2, intermediate_size=32,
        image_size=8, patch_size=4, num_channels=3, num_labels=3, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    model = transformers.ViTForImageClassification(config)

    def loss(m: nn.Module, g: torch.Generator) -> torch.Tensor:
        pixels = torch.randn(2, 3, 8, 8, generator=g)
        return m(pixel_values=pixels, labels=torch.randint(0, 3, (2,), generator=g)).loss

    # Every 2-D weight of the model except the positional table and class token; the names
    # follow the installed transformers version.
    tables = ("vit.embeddings.cls_token", "vit.embeddings.position_embeddings")
    names = [n for n, p in model.named_parameters() if p.dim() >= 2 and n not in tables]
    assert "vit.embeddings.patch_embeddings.projection.weight" in names
    assert len(names) == 8  # patch conv, q, k, v, o, fc1, fc2, classifier
    return Case(model, loss, names)


def decoder_lm_loss(vocab: int) -> Callable[[nn.Module, torch.Generator], torch.Tensor]:
    def loss(m: nn.Module, g: torch.Generator) -> torch.Tensor:
        ids = torch.randint(0, vocab, (2, 8), generator=g)
        return m(input_ids=ids, labels=ids).loss

    return loss


def llama() -> Case:
    """GQA, RMSNorm, rotary positions, SwiGLU, lm_head tied to the token embedding."""
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=40, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16,
        tie_word_embeddings=True,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(config)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    names = [f"model.layers.0.self_attn.{n}_proj.weight" for n in "qkvo"]
    names += [f"model.layers.0.mlp.{n}_proj.weight" for n in ("gate", "up", "down")]
    return Case(model, decoder_lm_loss(40), names)


def mixtral() -> Case:
    """Mixture of experts: transformers 5 stacks each layer's experts in 3-D tensors (kind
    ``experts``) behind a router matrix; transformers 4 had one nn.Linear per expert and a
    Linear gate. Either way every matrix but the (untied) token embedding is pruned."""
    transformers = pytest.importorskip("transformers")
    config = transformers.MixtralConfig(
        vocab_size=40, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16,
        num_local_experts=4, num_experts_per_tok=2,
    )  # fmt: skip
    model = transformers.MixtralForCausalLM(config)
    names = [n for n, p in model.named_parameters() if p.dim() >= 2 and "embed_tokens" not in n]
    assert len(names) >= 8  # q, k, v, o, router, experts (2 stacked or 12 per-expert), lm_head
    return Case(model, decoder_lm_loss(40), names)


def t5() -> Case:
    """Shared embedding tied to lm_head, relative attention bias tables (embeddings)."""
    transformers = pytest.importorskip("transformers")
    config = transformers.T5Config(
        vocab_size=40, d_model=16, d_kv=4, d_ff=24, num_layers=1, num_heads=4,
        relative_attention_num_buckets=8, dropout_rate=0.0, decoder_start_token_id=0,
        pad_token_id=0,
    )  # fmt: skip
    model = transformers.T5ForConditionalGeneration(config)
    attention = [f"{n}.weight" for n in "qkvo"]
    names = [f"encoder.block.0.layer.0.SelfAttention.{n}" for n in attention]
    names += [f"encoder.block.0.layer.1.DenseReluDense.{n}.weight" for n in ("wi", "wo")]
    names += [f"decoder.block.0.layer.0.SelfAttention.{n}" for n in attention]
    names += [f"decoder.block.0.layer.1.EncDecAttention.{n}" for n in attention]
    names += [f"decoder.block.0.layer.2.DenseReluDense.{n}.weight" for n in ("wi", "wo")]
    return Case(model, decoder_lm_loss(40), names)


CASES: dict[str, Callable[[], Case]] = {
    "transformer_encoder": transformer_encoder,
    "mha_kdim_vdim": mha_kdim_vdim,
    "lstm_gru": lstm_gru,
    "separable_cnn": separable_cnn,
    "weight_and_spectral_norm": weight_and_spectral_norm,
    "tied_lm": tied_lm,
    "gpt2": gpt2,
    "bert": bert,
    "vit": vit,
    "llama": llama,
    "mixtral": mixtral,
    "t5": t5,
}


# -- checks --------------------------------------------------------------------------------------


def effective(model: nn.Module, name: str) -> torch.Tensor:
    """The weight the forward pass uses: a parametrized original's layer weight."""
    if ".parametrizations." in f".{name}":
        owner, _, rest = f".{name}".partition(".parametrizations.")
        layer = model.get_submodule(owner.lstrip("."))
        return getattr(layer, rest.split(".")[0]).detach()
    return model.get_parameter(name).detach()


def assert_zeros(model: nn.Module, pruner: LotteryTicketPruner) -> None:
    for name, mask in zip(pruner.names, pruner.masks, strict=True):
        weight = effective(model, name)
        assert torch.isfinite(weight).all(), name
        pruned = torch.from_numpy(~mask)
        assert bool((weight[pruned] == 0).all()), name
        assert int(weight.ne(0).sum()) == int(mask.sum()), name  # kept weights are nonzero


@pytest.mark.parametrize("name", list(CASES))
def test_model_zoo(name: str) -> None:
    torch.manual_seed(0)
    case = CASES[name]()
    model = case.model
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    identity = [id(p) for p in model.parameters()]

    pruner = LotteryTicketPruner(model)
    assert pruner.names == case.expected

    pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    for mask in pruner.masks:
        assert int((~mask).sum()) == math.floor(0.5 * mask.size)
    total = sum(m.size for m in pruner.masks)
    pruned = sum(math.floor(0.5 * m.size) for m in pruner.masks)
    assert pruner.cumulative_pruning_rate == pytest.approx(pruned / total, abs=0)

    generator = torch.Generator().manual_seed(1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    with PrunerHook(pruner, model, optimizer):
        for _ in range(2):
            optimizer.zero_grad()
            case.loss(model, generator).backward()
            optimizer.step()
            assert_zeros(model, pruner)

    pruner.rewind(model)
    assert [id(p) for p in model.parameters()] == identity
    masks = dict(zip(pruner.names, pruner.masks, strict=True))
    for key, value in model.state_dict().items():
        expected = initial[key]
        if key in masks:
            expected = torch.where(torch.from_numpy(masks[key]), expected, 0.0)
        assert torch.equal(value, expected), key
    assert_zeros(model, pruner)

    # A global selection at high sparsity: exact count, and no layer emptied silently.
    pruner.set_pretrained_weights(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pruner.calc_prune_mask(model, 0.9, "large_final_global")
    kept_before = total - pruned
    assert sum(int((~m).sum()) for m in pruner.masks) == pruned + math.floor(0.9 * kept_before)
    emptied = [n for n, m in zip(pruner.names, pruner.masks, strict=True) if not m.any()]
    messages = [str(w.message) for w in caught if w.category is LayerCollapseWarning]
    assert all(any(n in text for text in messages) for n in emptied), (emptied, messages)
    assert bool(messages) == bool(emptied)

    # The two remedies keep every layer alive at the same exact global count.
    for strategy, floor in (("lamp", 0.0), ("large_final_global", 0.05)):
        pruner.reset_masks()
        with warnings.catch_warnings():
            warnings.simplefilter("error", LayerCollapseWarning)
            pruner.calc_prune_mask(model, 0.9, strategy, min_layer_density=floor)
        assert sum(int((~m).sum()) for m in pruner.masks) == math.floor(0.9 * total), strategy
        for mask in pruner.masks:
            assert int(mask.sum()) >= max(1, math.ceil(floor * mask.size)), strategy


def test_a_zero_initialised_head_collapses_with_a_warning() -> None:
    torch.manual_seed(0)
    model = separable_cnn().model
    nn.init.zeros_(model[9].weight)
    pruner = LotteryTicketPruner(model)
    pruner.set_pretrained_weights(model)
    with pytest.warns(LayerCollapseWarning, match=r"9\.weight"):
        pruner.calc_prune_mask(model, 0.5, "large_final_global")
    assert not pruner.masks[-1].any()
