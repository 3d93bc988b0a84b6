"""Dynamic padding + BERT masking (15 %, 80/10/10), optionally whole-word.

Masks are drawn per example from a generator seeded by the example's index, not from the
global RNG, which makes a resumed run identical to an uninterrupted one. `static` keeps one set
of masks for the whole run (as BERT's create_pretraining_data fixed them per duplicate);
`dynamic` mixes the epoch into the seed (RoBERTa's fresh masks every epoch; the Trainer tells
the collator the epoch, see finpipe.training.Trainer). Epoch 0's masks are the same either way.

Our own rather than DataCollatorForLanguageModeling because it must carry token_type_ids and
next_sentence_label through, pass pre-masked evaluation examples untouched, and mask whole
words from a precomputed continuation-piece table without Python per-token work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from finpipe.buckets import bucket_width

IGNORE = -100


class PretrainCollator:
    def __init__(
        self,
        tokenizer: Any,
        mlm_probability: float = 0.15,
        whole_word_mask: bool = False,
        pad_to_multiple_of: int | None = 8,
        seed: int = 0,
        masking: str = "static",
        max_length: int | None = None,
    ) -> None:
        self.seed = seed
        self.dynamic = masking == "dynamic"
        self.epoch = 0
        self.pad_id = tokenizer.pad_token_id
        self.mask_id = tokenizer.mask_token_id
        self.vocab_size = len(tokenizer)
        self.mlm_probability = mlm_probability
        self.whole_word_mask = whole_word_mask
        self.pad_to_multiple_of = pad_to_multiple_of
        self.max_length = max_length  # the examples' max_seq_length: padding stops there
        self.special = torch.zeros(self.vocab_size, dtype=torch.bool)
        self.special[list(tokenizer.all_special_ids)] = True
        # WordPiece continuation pieces start with "##": they follow their word's first piece
        vocab = tokenizer.convert_ids_to_tokens(list(range(self.vocab_size)))
        self.continuation = torch.tensor([t.startswith("##") for t in vocab], dtype=torch.bool)

    def _pad(self, rows: Sequence[Sequence[int]], value: int, width: int) -> torch.Tensor:
        out = torch.full((len(rows), width), value, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
        return out

    def mask(self, input_ids: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (masked input_ids, labels); special tokens and padding are never chosen."""
        labels = input_ids.clone()
        rand = torch.rand(input_ids.shape, generator=generator)
        if self.whole_word_mask:
            starts = ~self.continuation[input_ids]
            pos = torch.arange(input_ids.shape[1]).expand_as(input_ids)
            first_piece = torch.cummax(torch.where(starts, pos, torch.zeros_like(pos)), dim=1).values
            rand = rand.gather(1, first_piece)  # every piece shares its word's draw
        chosen = (rand < self.mlm_probability) & ~self.special[input_ids]
        labels[~chosen] = IGNORE
        action = torch.rand(input_ids.shape, generator=generator)
        masked = input_ids.clone()
        masked[chosen & (action < 0.8)] = self.mask_id
        random_tokens = torch.randint(self.vocab_size, input_ids.shape, generator=generator)
        swap = chosen & (action >= 0.8) & (action < 0.9)
        masked[swap] = random_tokens[swap]
        return masked, labels

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _generator(self, idx: int) -> torch.Generator:
        seed = self.seed * 1_000_003 + int(idx)
        if self.dynamic and self.epoch:
            # an odd 64-bit multiplier spreads epochs far apart in seed space (no two
            # (epoch, idx) pairs of a realistic run share a seed)
            seed = (seed + self.epoch * 0x9E3779B97F4A7C15) % (1 << 63)
        return torch.Generator().manual_seed(seed)

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = bucket_width(max(len(e["input_ids"]) for e in examples), self.pad_to_multiple_of, self.max_length)
        input_ids = self._pad([e["input_ids"] for e in examples], self.pad_id, width)
        batch = {
            "input_ids": input_ids,
            "token_type_ids": self._pad([e["token_type_ids"] for e in examples], 0, width),
            "attention_mask": self._pad([[1] * len(e["input_ids"]) for e in examples], 0, width),
        }
        if "labels" in examples[0]:  # pre-masked (evaluation): keep the masks fixed
            batch["labels"] = self._pad([e["labels"] for e in examples], IGNORE, width)
        elif "idx" in examples[0]:
            # each example's masks come from (seed, its index), not from the global RNG: the
            # Trainer's dataloader fetches a batch ahead, so global-RNG masks would depend on
            # where a run was interrupted and resumed
            rows = [self.mask(input_ids[i : i + 1], self._generator(e["idx"])) for i, e in enumerate(examples)]
            batch["input_ids"] = torch.cat([r[0] for r in rows])
            batch["labels"] = torch.cat([r[1] for r in rows])
        else:
            batch["input_ids"], batch["labels"] = self.mask(input_ids)
        if "next_sentence_label" in examples[0]:
            batch["next_sentence_label"] = torch.tensor([e["next_sentence_label"] for e in examples], dtype=torch.long)
        return batch
