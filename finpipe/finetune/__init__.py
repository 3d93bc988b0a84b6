"""Fine-tuning: the sentiment head on BertModel, token classification for NER, and the
layer-wise learning rates / gradual unfreezing both share."""
