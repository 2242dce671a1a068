"""Building the Trainer for SFT (ours: masking + packing) and DPO (TRL's DPOTrainer).

Kept apart from train.py so the benchmark can build exactly the trainer a job uses.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

from assistant.config import FinetuneConfig
from assistant.errors import DatasetError
from finetune.callbacks import EventsCallback, TokenCounter
from finetune.data import Dataset, preference_pairs, sft_rows
from finetune.events import EventWriter
from finetune.masking import collate, pack, tokenize_rows, unpacked, with_system

logger = logging.getLogger(__name__)


def lora_config(settings: FinetuneConfig) -> Any:
    from peft import LoraConfig

    targets: Any = settings.target_modules
    if targets == ["all-linear"]:
        targets = "all-linear"
    return LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM", bias="none")


def training_arguments(settings: FinetuneConfig, out: Path, *, progress: bool, dtype: str, cls: Any = None,
                       **extra: Any) -> Any:
    import torch
    from transformers import TrainingArguments

    cuda = torch.cuda.is_available()
    return (cls or TrainingArguments)(
        output_dir=str(out / "checkpoints"),
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        learning_rate=settings.learning_rate,
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps if settings.max_steps > 0 else -1,
        warmup_steps=settings.warmup_ratio,  # a float below 1 is a fraction of all steps
        lr_scheduler_type="linear",
        logging_steps=1,
        save_strategy="steps",
        save_steps=settings.save_every,
        save_total_limit=2,
        seed=settings.seed,
        data_seed=settings.seed,
        report_to=["tensorboard"],
        remove_unused_columns=False,
        use_cpu=not cuda,
        bf16=cuda and dtype == "bfloat16",
        fp16=cuda and dtype == "float16",
        dataloader_num_workers=0,
        disable_tqdm=not progress,
        **extra,
    )


def sft_examples(tokenizer: Any, datasets: list[Dataset], settings: FinetuneConfig,
                 system_prompt: str) -> list[dict[str, list[int]]]:
    rows = [row for d in datasets for row in sft_rows(d)]
    if not rows:
        raise DatasetError("The data have no rows to imitate; add examples marked positive.")
    tokens = tokenize_rows(tokenizer, rows, max_seq_len=settings.max_seq_len, system_prompt=system_prompt)
    return pack(tokens, settings.max_seq_len) if settings.packing else unpacked(tokens)


def counting_collate(rows: list[dict[str, list[int]]], *, pad_id: int) -> dict[str, Any]:
    """Collate, and say how many real (non-padding) tokens the batch holds, for tokens/s."""
    import torch

    batch = collate(rows, pad_id)
    batch["n_tokens"] = torch.tensor(sum(len(r["input_ids"]) for r in rows))
    return batch


class _NoCacheTrainer:
    """Mixin: no KV cache in training forward passes — transformers only derives the packed
    (block-diagonal) mask from position ids when there is no cache and no attention mask.
    Also counts the tokens of each batch as it is consumed (the dataloader prefetches)."""

    token_counter: TokenCounter

    def compute_loss(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        inputs = dict(inputs)
        n_tokens = inputs.pop("n_tokens", None)
        if n_tokens is not None and model.training:
            self.token_counter.add(int(n_tokens))
        inputs["use_cache"] = False
        return super().compute_loss(model, inputs, *args, **kwargs)  # type: ignore[misc]  # Trainer is untyped here


def build_sft_trainer(loaded: Any, datasets: list[Dataset], settings: FinetuneConfig, *, out: Path,
                      system_prompt: str, writer: EventWriter | None, progress: bool) -> tuple[Any, EventsCallback]:
    from datasets import Dataset as HFDataset
    from peft import get_peft_model
    from transformers import Trainer

    examples = sft_examples(loaded.tokenizer, datasets, settings, system_prompt)
    model = get_peft_model(loaded.model, lora_config(settings))
    model.config.use_cache = False
    counter = TokenCounter()
    args = training_arguments(settings, out, progress=progress, dtype=loaded.dtype)
    callback = EventsCallback(writer, counter, world_size=args.world_size)
    trainer_cls = type("SFTTrainer", (_NoCacheTrainer, Trainer), {})
    trainer = trainer_cls(model=model, args=args, train_dataset=HFDataset.from_list(examples),
                          data_collator=functools.partial(counting_collate, pad_id=loaded.tokenizer.pad_token_id),
                          callbacks=[callback])
    trainer.token_counter = counter
    logger.info("SFT on %d sequences (%s)", len(examples), "packed" if settings.packing else "one example each")
    return trainer, callback


def build_dpo_trainer(loaded: Any, datasets: list[Dataset], settings: FinetuneConfig, *, out: Path,
                      system_prompt: str, writer: EventWriter | None, progress: bool) -> tuple[Any, EventsCallback]:
    """TRL's DPOTrainer on conversational pairs; with a LoRA adapter the reference model is the
    base with the adapter disabled, so no second copy of the weights is held."""
    from datasets import Dataset as HFDataset
    from trl import DPOConfig, DPOTrainer

    pairs = [p for d in datasets for p in preference_pairs(d)]
    if not pairs:
        raise DatasetError("The data have no preference pairs (prompt/chosen/rejected) to train DPO on.")
    rows = [{"prompt": with_system(p["prompt"], system_prompt),
             "chosen": [{"role": "assistant", "content": p["chosen"]}],
             "rejected": [{"role": "assistant", "content": p["rejected"]}]} for p in pairs]
    counter = TokenCounter()
    args = training_arguments(settings, out, progress=progress, dtype=loaded.dtype, cls=DPOConfig,
                              beta=settings.dpo_beta, max_length=settings.max_seq_len)
    callback = EventsCallback(writer, counter, world_size=args.world_size)
    trainer = DPOTrainer(model=loaded.model, args=args, train_dataset=HFDataset.from_list(rows),
                         processing_class=loaded.tokenizer, peft_config=lora_config(settings), callbacks=[callback])
    return trainer, callback
