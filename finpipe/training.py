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
    """Whether bf16 autocast pays off here: on a GPU, whether it supports bf16; on a CPU, whether
    it advertises bf16 (AVX-512 BF16 or AMX) and a short matmul probe, run once and cached, finds
    bf16 faster than fp32 (finpipe/bf16_probe.py): the flag alone says nothing about speed."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    from finpipe.bf16_probe import bf16_pays_off

    return bf16_pays_off()


def use_bf16(setting: bool | str) -> bool:
    """`bf16: auto` decides by bf16_available(); true/false are taken as given."""
    return bf16_available() if setting == "auto" else bool(setting)


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def training_arguments(
    cfg: Any,
    output_dir: Path,
    *,
    label_names: list[str],
    bf16: bool,
    max_steps: int | None = None,
    save: bool = True,
    seed: int | None = None,
    eval_steps: int | None = None,
    best_metric: str | None = None,
) -> TrainingArguments:
    """cfg is a PretrainTrain/FinetuneTrain section (learning_rate, batch_size, ...).

    With `eval_steps`, the dev set is scored (Trainer.evaluate, see `Trainer.scorer`) and a
    checkpoint written every eval_steps, and the best checkpoint by `best_metric` is restored
    at the end: early stopping keeps the model of the best evaluation, not the last one.
    """
    fused = cfg.fused_adamw
    seed = cfg.seed if seed is None else seed
    evaluating = eval_steps is not None
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
        seed=seed,
        data_seed=seed,
        bf16=bf16,
        use_cpu=not torch.cuda.is_available(),
        optim="adamw_torch_fused" if fused else "adamw_torch",
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        length_column_name="length",
        save_strategy="steps" if save else "no",
        save_steps=eval_steps if evaluating else cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        report_to=[],
        eval_strategy="steps" if evaluating else "no",
        eval_steps=eval_steps,
        load_best_model_at_end=evaluating,
        metric_for_best_model=best_metric,
        greater_is_better=True,
        per_device_eval_batch_size=getattr(cfg, "eval_batch_size", 8),
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


class L2SP:
    """L2-SP (Li et al. 2018): weight / 2 * ||theta - theta_start||^2 over the parameters that
    came with the starting encoder, added to the training loss. It pulls continued pretraining
    back towards the starting point, against forgetting what the general model knew."""

    def __init__(self, named_parameters: list[tuple[str, torch.nn.Parameter]], weight: float) -> None:
        self.weight = weight
        self.params = [p for _, p in named_parameters]
        self.start = [p.detach().clone() for p in self.params]

    def distance(self) -> torch.Tensor:
        """Squared L2 distance from the start (summed over every anchored parameter)."""
        if self.start and self.start[0].device != self.params[0].device:  # the Trainer moved the model
            self.start = [s.to(p.device) for p, s in zip(self.params, self.start, strict=True)]
        return torch.stack([(p - s).pow(2).sum() for p, s in zip(self.params, self.start, strict=True)]).sum()

    def penalty(self) -> torch.Tensor:
        return 0.5 * self.weight * self.distance()


class Trainer(HFTrainer):
    """The HF Trainer with a resumable length-grouped sampler; every stage trains with it.

    Two optional additions for fine-tuning:
    - `scorer(model) -> metrics`: replaces the Trainer's evaluation loop. The dev metrics that
      matter (entity-level F1 on whole sentences stitched from windows, macro-F1 from CORAL
      logits) are not a function of per-batch logits, so the task computes them itself; early
      stopping and best-checkpoint selection then run on exactly the reported numbers.
    - `param_groups`: the optimizer's groups (discriminative / layer-wise learning rates);
      the Trainer's scheduler then scales every group's own learning rate.
    And for continued pretraining: `anchor` (L2SP), a penalty on the distance from the starting
    weights; collators with `set_epoch` are told each epoch (dynamic masking).
    """

    def __init__(
        self,
        *args: Any,
        scorer: Any = None,
        param_groups: list[dict[str, Any]] | None = None,
        anchor: L2SP | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        # Every model trained here returns the mean loss of its micro-batch. The HF Trainer
        # takes any forward with **kwargs for one that divides by `num_items_in_batch` itself;
        # it then skips the division by gradient_accumulation_steps and multiplies by the
        # number of processes, so the loss and the gradient came out xGA and xworld size.
        # Declaring the models mean-reducing restores plain averaging of micro-batch means.
        self.model_accepts_loss_kwargs = False
        self.scorer = scorer
        self.param_groups = param_groups
        self.anchor = anchor

    def _run_epoch(self, *args: Any, **kwargs: Any) -> Any:
        # the epoch, for collators whose masks change per epoch (dynamic masking). Set before the
        # epoch's dataloader is iterated (HF creates the iterator inside _run_epoch), and from the
        # epoch number itself, so a run resumed mid-epoch draws the same masks
        if hasattr(self.data_collator, "set_epoch"):
            self.data_collator.set_epoch(kwargs["epoch"])
        return super()._run_epoch(*args, **kwargs)

    def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
        result = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        if self.anchor is None or not model.training:
            return result
        if return_outputs:
            return result[0] + self.anchor.penalty(), result[1]
        return result + self.anchor.penalty()

    def create_optimizer(self, model: Any = None) -> torch.optim.Optimizer:
        if self.param_groups is None or self.optimizer is not None:
            return super().create_optimizer(model)
        fused = self.args.optim == "adamw_torch_fused"
        self.optimizer = torch.optim.AdamW(
            self.param_groups,
            lr=self.args.learning_rate,
            betas=(self.args.adam_beta1, self.args.adam_beta2),
            eps=self.args.adam_epsilon,
            fused=fused,
        )
        return self.optimizer

    def evaluate(self, eval_dataset: Any = None, ignore_keys: Any = None, metric_key_prefix: str = "eval") -> dict[str, float]:
        if self.scorer is None:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        was_training = self.model.training
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in self.scorer(self.model).items() if isinstance(v, (int, float))}
        self.model.train(was_training)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        column = self.args.length_column_name
        if self.args.train_sampling_strategy == "group_by_length" and column in getattr(dataset, "column_names", []):
            # grouped by the global batch (all micro-batches of all processes): then 16 x 1,
            # 8 x 2 accumulated and 8 on each of 2 processes train on the same examples per step
            return SeededLengthGroupedSampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size,
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

    class StepAligned(DVCLiveCallback):
        """dvclive counts its own steps (one per log call, eval and train logs apart); the
        curves' x should be the optimizer step, which also lines up a resumed run."""

        def on_log(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                self.live.step = state.global_step
            super().on_log(args, state, control, **kwargs)

    return StepAligned(live=live)
