"""Domain-adaptive pretraining pieces: NSP pair construction, MLM collator, the masked-only
BertForPreTraining, base-model loading and held-out evaluation."""
