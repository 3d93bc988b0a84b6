"""BertForPreTraining that decodes only the masked positions.

Stock BertForPreTraining applies the vocabulary-sized decoder to every position; with 15 %
masking that is ~85 % wasted work, and for a 6-layer 384-hidden model the decoder costs about
as much as the encoder. The weights, their names and `save_pretrained` output are unchanged,
so the checkpoint loads as a plain BertForPreTraining / BertModel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import BertForPreTraining
from transformers.utils import ModelOutput


@dataclass
class PretrainOutput(ModelOutput):
    loss: torch.Tensor | None = None
    mlm_logits: torch.Tensor | None = None  # [n_masked, vocab]: only the masked positions
    seq_relationship_logits: torch.Tensor | None = None
    mlm_loss: torch.Tensor | None = None
    nsp_loss: torch.Tensor | None = None


class MaskedOnlyBertForPreTraining(BertForPreTraining):
    # the loss is a mean over this micro-batch (MLM: its masked tokens; NSP: its pairs), not a
    # sum over the Trainer's `num_items_in_batch`: the Trainer must average micro-batches itself
    accepts_loss_kwargs = False

    def forward(
        self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, next_sentence_label=None, **kwargs
    ) -> PretrainOutput:
        out = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, return_dict=True)
        loss = mlm_logits = mlm_loss = nsp_loss = None
        if labels is not None:
            selected = labels != -100
            mlm_logits = self.cls.predictions(out.last_hidden_state[selected])
            # the loss in fp32: bf16 log-softmax over 30k classes loses precision; a batch
            # without masked tokens contributes zero (not NaN)
            mlm_loss = F.cross_entropy(mlm_logits.float(), labels[selected]) if selected.any() else mlm_logits.sum() * 0.0
            loss = mlm_loss
        nsp_logits = self.cls.seq_relationship(out.pooler_output)
        if next_sentence_label is not None:
            nsp_loss = F.cross_entropy(nsp_logits.float(), next_sentence_label)
            loss = nsp_loss if loss is None else loss + nsp_loss
        return PretrainOutput(
            loss=loss, mlm_logits=mlm_logits, seq_relationship_logits=nsp_logits, mlm_loss=mlm_loss, nsp_loss=nsp_loss
        )
