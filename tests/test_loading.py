"""Loading an encoder under new heads: one log line naming the new and unused modules, no
transformers LOAD REPORT table."""

from __future__ import annotations

import logging

from transformers import BertConfig, BertForPreTraining, BertForTokenClassification

from finpipe.loading import load_with_heads


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_new_heads_in_one_line_without_the_report_table(tmp_path, caplog):
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    BertForPreTraining(config).save_pretrained(tmp_path)
    reporter, seen = logging.getLogger("transformers.modeling_utils"), Records()
    reporter.addHandler(seen)  # the transformers loggers do not propagate to pytest's
    try:
        with caplog.at_level(logging.INFO, logger="finpipe.loading"):
            model, info = load_with_heads(BertForTokenClassification, tmp_path, "news", num_labels=3)
        BertForTokenClassification.from_pretrained(tmp_path, num_labels=3)  # the control: a table
    finally:
        reporter.removeHandler(seen)
    assert isinstance(model, BertForTokenClassification) and "classifier.weight" in info["missing_keys"]
    assert sum("LOAD REPORT" in m for m in seen.messages) == 1  # the control's only
    lines = [r.getMessage() for r in caplog.records if r.name == "finpipe.loading"]
    assert len(lines) == 1
    assert "news from" in lines[0] and "new weights: classifier (2)" in lines[0]
    assert "unused checkpoint weights: bert.pooler (2), cls.predictions (5), cls.seq_relationship (2)" in lines[0]
