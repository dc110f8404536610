"""ltp_torch.hf.PrunerCallback with the real Hugging Face Trainer on a tiny BERT (random init from
a config, no download): exact zeros after every optimizer step with gradient accumulation,
AdamW with weight decay, the rewind point, reuse across levels and resume."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from ltp_torch import LotteryTicketPruner  # noqa: E402
from ltp_torch.hf import MASKS_FILE, PrunerCallback  # noqa: E402

VOCAB, LENGTH = 40, 8


def tiny_bert(seed: int = 0) -> Any:
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=LENGTH,
        num_labels=2,
    )
    return transformers.BertForSequenceClassification(config)


def dataset(n: int = 32, seed: int = 0) -> list[dict[str, Any]]:
    """Label 1 when token 1 appears more often than token 2: learnable, but not in 4 steps."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (n, LENGTH), generator=generator)
    ids[:, 1::3] = torch.randint(1, 3, (n, len(range(1, LENGTH, 3))), generator=generator)
    labels = ((ids == 1).sum(1) > (ids == 2).sum(1)).long()
    return [{"input_ids": i, "labels": int(y)} for i, y in zip(ids, labels, strict=True)]


def trainer_for(
    model: Any, callbacks: list[Any], out: Path, *, max_steps: int = 4, **kwargs: Any
) -> Any:
    settings: dict[str, Any] = {"save_strategy": "no", **kwargs}
    args = transformers.TrainingArguments(
        output_dir=str(out),
        max_steps=max_steps,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        learning_rate=5e-2,
        weight_decay=0.1,
        report_to=[],
        use_cpu=True,
        logging_strategy="no",
        disable_tqdm=True,
        seed=0,
        **settings,
    )
    return transformers.Trainer(
        model=model, args=args, train_dataset=dataset(), callbacks=callbacks
    )


class ZeroChecker(transformers.TrainerCallback):
    """Whether every pruned weight is exactly zero right after each optimizer step; snapshots of
    the whole model after each step."""

    def __init__(self, pruner: LotteryTicketPruner) -> None:
        self.pruner = pruner
        self.zero_after_step: list[bool] = []
        self.snapshots: list[list[torch.Tensor]] = []
        self.pruned_grads_nonzero = False
        self.grads_seen = 0

    def _pairs(self, model: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
        masks = [torch.from_numpy(m) for m in self.pruner.masks]
        return list(zip(self.pruner.parameters(model), masks, strict=True))

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        for parameter, mask in self._pairs(kw["model"]):
            if parameter.grad is not None:
                self.grads_seen += 1
                if bool((parameter.grad[~mask] != 0).any()):
                    self.pruned_grads_nonzero = True

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        model = kw["model"]
        self.zero_after_step.append(all(bool((p[~m] == 0).all()) for p, m in self._pairs(model)))
        self.snapshots.append([p.detach().clone() for p in model.parameters()])


def test_trainer_keeps_zeros_after_every_step_and_captures_rewind(tmp_path: Path) -> None:
    model = tiny_bert()
    pruner = LotteryTicketPruner(model)
    assert "bert.embeddings.word_embeddings.weight" not in pruner.names
    assert "classifier.weight" in pruner.names
    pruner.calc_prune_mask(model, 0.5, "random")
    checker = ZeroChecker(pruner)
    callback = PrunerCallback(pruner, rewind_iteration=2)
    trainer = trainer_for(model, [callback, checker], tmp_path)
    trainer.train()

    assert checker.zero_after_step == [True] * 4  # 8 micro-batches, 4 optimizer steps
    assert checker.grads_seen and not checker.pruned_grads_nonzero
    assert callback.captured_at == 2
    pruner.rewind(model)  # the whole model after the 2nd step, pruned entries zeroed
    for rewound, captured in zip(model.parameters(), checker.snapshots[1], strict=True):
        assert torch.equal(rewound, captured)


def test_levels_reuse_one_callback_and_resume_counts_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = tiny_bert(seed=1)
    pruner = LotteryTicketPruner(model)
    callback = PrunerCallback(pruner, rewind_iteration=1)
    trainer_for(model, [callback], tmp_path / "dense", max_steps=2).train()
    assert callback.captured_at == 1
    pruner.set_pretrained_weights(model)
    pruner.calc_prune_mask(model, 0.6, "large_final_global")
    pruner.rewind(model)
    checker = ZeroChecker(pruner)
    trainer = trainer_for(
        model,
        [callback, checker],
        tmp_path / "level1",
        max_steps=3,
        save_strategy="steps",
        save_steps=2,
    )
    trainer.train()
    assert checker.zero_after_step == [True] * 3 and callback.captured_at == 1

    # Resuming a run that wants its rewind point at step 3 from the step-2 checkpoint counts on.
    resumed = PrunerCallback(pruner, rewind_iteration=3)
    checker = ZeroChecker(pruner)
    trainer = trainer_for(model, [resumed, checker], tmp_path / "level1", max_steps=3)
    trainer.train(resume_from_checkpoint=str(tmp_path / "level1" / "checkpoint-2"))
    assert checker.zero_after_step == [True] and resumed.captured_at == 3

    with caplog.at_level(logging.WARNING, logger="ltp_torch"):
        late = PrunerCallback(pruner, rewind_iteration=50)
        trainer_for(model, [late], tmp_path / "late", max_steps=1).train()
    assert "rewind point was not captured" in caplog.text and late.captured_at is None


def test_checkpoints_hold_the_masks_and_resume_refuses_to_revive(tmp_path: Path) -> None:
    """A restarted process resuming with a fresh pruner used to train every pruned weight back
    (1358 of 1398 non-zero after two steps), silently: the checkpoints had no masks."""
    model = tiny_bert()
    pruner = LotteryTicketPruner(model)
    pruner.calc_prune_mask(model, 0.6, "random")
    run = tmp_path / "run"
    trainer = trainer_for(model, [PrunerCallback(pruner)], run, save_strategy="steps", save_steps=2)
    trainer.train()
    saved = run / "checkpoint-2" / MASKS_FILE
    check = LotteryTicketPruner(tiny_bert(seed=5))
    check.load_masks(saved)
    assert all(np.array_equal(a, b) for a, b in zip(check.masks, pruner.masks, strict=True))

    restarted = tiny_bert(seed=3)
    fresh = LotteryTicketPruner(restarted)
    checker = ZeroChecker(pruner)  # the checkpoint's masks
    trainer = trainer_for(restarted, [PrunerCallback(fresh), checker], run)
    with pytest.raises(ValueError, match=r"pruner\.load_masks\(.*ltp_masks\.npz"):
        trainer.train(resume_from_checkpoint=str(run / "checkpoint-2"))
    assert checker.zero_after_step == []  # refused before any step

    fresh.load_masks(saved)
    trainer = trainer_for(restarted, [PrunerCallback(fresh), checker], run)
    trainer.train(resume_from_checkpoint=str(run / "checkpoint-2"))
    assert checker.zero_after_step == [True, True]

    # A new level rewound to a checkpoint prunes more than it: accepted.
    fresh.set_pretrained_weights(restarted)
    fresh.calc_prune_mask(restarted, 0.5, "large_final")
    checker = ZeroChecker(fresh)
    trainer = trainer_for(restarted, [PrunerCallback(fresh), checker], run)
    trainer.train(resume_from_checkpoint=str(run / "checkpoint-2"))
    assert checker.zero_after_step == [True, True]

    # A dense run saved into the same folder: no mask file, and no stale one left behind.
    dense = tiny_bert(seed=6)
    every_two = {"save_strategy": "steps", "save_steps": 2}
    trainer = trainer_for(dense, [PrunerCallback(LotteryTicketPruner(dense))], run, **every_two)
    trainer.train()
    assert not saved.exists()

    # A checkpoint without the mask file (saved by an older version): its zeros give it away.
    trainer_for(model, [PrunerCallback(pruner)], run, **every_two).train()
    saved.unlink()
    other = tiny_bert(seed=4)
    trainer = trainer_for(other, [PrunerCallback(LotteryTicketPruner(other))], run, max_steps=3)
    with pytest.warns(UserWarning, match=r"exactly zero at \d+ of the \d+ entries"):
        trainer.train(resume_from_checkpoint=str(run / "checkpoint-2"))


def test_bad_input(tmp_path: Path) -> None:
    model = tiny_bert()
    pruner = LotteryTicketPruner(model)
    with pytest.raises(ValueError, match="rewind_iteration"):
        PrunerCallback(pruner, rewind_iteration=-2)
    with pytest.raises(TypeError, match="pruner"):
        PrunerCallback(model)
    other = LotteryTicketPruner(torch.nn.Linear(3, 3))
    trainer = trainer_for(model, [PrunerCallback(other)], tmp_path)
    with pytest.raises(ValueError, match="weight"):
        trainer.train()
