"""A winning ticket in a tiny BERT trained with the Hugging Face ``Trainer``.

The task is synthetic text classification (no download): in 16 random tokens, do words 2 and 3
(placed once each at random positions) come in that order? It needs attention and positions, and
a dense tiny BERT learns it to about 96% in 200 steps. ``ltp_torch.find_ticket`` runs IMP with
both controls; its ``train`` is a plain ``Trainer(...).train()`` (find_ticket hooks the optimizer
the ``Trainer`` builds), its ``evaluate`` the test accuracy. Half of the remaining attention,
feed-forward, pooler and classifier weights (``nn.Linear``) are pruned per level in every layer;
embeddings and layer norms are not. Results go to ``bert_ticket/``. A minute or two of CPU
(seconds with ``LTP_EXAMPLE_SMOKE=1``).

Usage::

    python examples/hf_bert_ticket.py
"""

from __future__ import annotations

import os
import tempfile

import torch
import transformers

from ltp_torch import find_ticket

SMOKE = os.environ.get("LTP_EXAMPLE_SMOKE") == "1"
LEVELS = 1 if SMOKE else 4
STEPS = 4 if SMOKE else 200
VOCAB, LENGTH = 64, 16


def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sequence holds words 2 and 3 once, at random places: is 2 before 3?"""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (n, LENGTH), generator=generator)
    ids[:, 0] = 1  # a [CLS]-like first token, read by the classifier
    places = torch.stack([torch.randperm(LENGTH - 1, generator=generator)[:2] + 1 for _ in ids])
    rows = torch.arange(n)
    ids[rows, places[:, 0]] = 2
    ids[rows, places[:, 1]] = 3
    return ids, (places[:, 0] < places[:, 1]).long()


def make_bert() -> transformers.BertForSequenceClassification:
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=LENGTH,
        num_labels=2,
    )
    return transformers.BertForSequenceClassification(config)


def main() -> None:
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    x_train, y_train = make_data(2048, seed=0)
    x_test, y_test = make_data(512, seed=1)
    train_set = [{"input_ids": x, "labels": int(y)} for x, y in zip(x_train, y_train, strict=True)]

    def train(model: transformers.PreTrainedModel) -> None:
        with tempfile.TemporaryDirectory() as scratch:
            args = transformers.TrainingArguments(
                output_dir=scratch,
                max_steps=STEPS,
                per_device_train_batch_size=32,
                learning_rate=2e-3,
                warmup_steps=STEPS // 10,
                report_to=[],
                use_cpu=True,
                save_strategy="no",
                logging_strategy="no",
                disable_tqdm=True,
            )
            trainer = transformers.Trainer(model=model, args=args, train_dataset=train_set)
            trainer.remove_callback(transformers.trainer_callback.PrinterCallback)
            trainer.train()

    @torch.no_grad()
    def evaluate(model: transformers.PreTrainedModel) -> dict[str, float]:
        model.eval()
        logits = model(input_ids=x_test).logits
        return {"accuracy": float((logits.argmax(1) == y_test).float().mean())}

    records = find_ticket(
        make_bert,
        train,
        evaluate,
        levels=LEVELS,
        rate=0.5,
        out="bert_ticket",
        progress=False,
    )
    for record in records:
        print(
            f"level {record.level} {record.arm:>13}: {record.weights_remaining:6.1%} of weights "
            f"left, accuracy {record.metrics['accuracy']:.3f}"
        )
    print("results, table.md and the plot are in bert_ticket/")


if __name__ == "__main__":
    main()
