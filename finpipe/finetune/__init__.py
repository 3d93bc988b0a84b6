"""Fine-tuning: the sentiment head on BertModel, token classification for NER, and the
layer-wise learning rates / gradual unfreezing both share; the stage skeleton both tasks run
(stage.py) and the outputs it writes for them (outputs.py)."""
