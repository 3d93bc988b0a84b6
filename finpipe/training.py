"""The one training set-up every stage shares: TrainingArguments from params, bf16 detection,
checkpoint discovery and the dvclive callback. Stages build a Trainer from these."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer as HFTrainer
from transformers import TrainingArguments
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices

from finpipe.errors import UserError

log = logging.getLogger(__name__)


def bf16_available() -> bool:
    """bf16 autocast pays off on GPUs that support it and on CPUs with AVX-512 BF16 or AMX."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool((check and check()) or (amx and amx()))


def use_bf16(setting: bool | str) -> bool:
    return bf16_available() if setting == "auto" else bool(setting)


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def training_arguments(
    cfg: Any, output_dir: Path, *, label_names: list[str], bf16: bool, max_steps: int | None = None, save: bool = True
) -> TrainingArguments:
    """cfg is a PretrainTrain-like section (learning_rate, batch_size, ...)."""
    fused = cfg.fused_adamw
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        lr_scheduler_type=cfg.lr_scheduler,
        max_steps=cfg.max_steps if max_steps is None else max_steps,
        num_train_epochs=cfg.num_epochs,
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=bf16,
        use_cpu=not torch.cuda.is_available(),
        optim="adamw_torch_fused" if fused else "adamw_torch",
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        length_column_name="length",
        save_strategy="steps" if save else "no",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        report_to=[],
        eval_strategy="no",
        dataloader_num_workers=0,
        remove_unused_columns=False,
        label_names=label_names,
        disable_tqdm=not os.isatty(2),
        # gloo for multi-process CPU runs (torchrun / accelerate launch); NCCL is the GPU default
        ddp_backend="gloo" if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available() else None,
    )


class SeededLengthGroupedSampler(LengthGroupedSampler):
    """HF's LengthGroupedSampler draws its permutation from the global torch RNG, which a
    resumed run restores to the checkpoint's state before the epoch starts: the resumed epoch
    then sees other batches than the uninterrupted one. A generator seeded by (seed, epoch)
    gives every run, resumed or not and on every rank, the same order."""

    def __init__(self, *args: Any, seed: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


class Trainer(HFTrainer):
    """The HF Trainer with a resumable length-grouped sampler; every stage trains with it."""

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        column = self.args.length_column_name
        if self.args.train_sampling_strategy == "group_by_length" and column in getattr(dataset, "column_names", []):
            return SeededLengthGroupedSampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps,
                dataset=dataset,
                lengths=dataset[column],
                seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
            )
        return super()._get_train_sampler(train_dataset)


def resume_point(output_dir: Path) -> str | None:
    """The newest complete checkpoint. The Trainer writes trainer_state.json last, so a
    checkpoint cut short by a kill has none and is passed over."""
    if not output_dir.is_dir():
        return None
    done = [
        p
        for p in output_dir.glob("checkpoint-*")
        if (p / "trainer_state.json").is_file() and p.name.removeprefix("checkpoint-").isdigit()
    ]
    if not done:
        return None
    return str(max(done, key=lambda p: int(p.name.removeprefix("checkpoint-"))))


def dvclive_callback(live_dir: Path, resume: bool) -> Any:
    """Loss/learning-rate curves as dvclive TSVs (declared as DVC plots); rank 0 only."""
    from dvclive import Live
    from scmrepo.exceptions import SCMError
    from transformers.integrations import DVCLiveCallback

    try:
        live = Live(dir=str(live_dir), resume=resume, save_dvc_exp=False, dvcyaml=None, report=None)
    except SCMError as err:  # dvclive reads the git revision; an empty repo has none
        raise UserError(
            f"dvclive: {err}: commit once (git add -A && git commit) so the training curves can be recorded"
        ) from None
    return DVCLiveCallback(live=live)
