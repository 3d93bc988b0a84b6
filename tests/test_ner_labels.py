"""NER sub-token labels when a type has B- tags but no I- tag (single-token entities only)."""

from __future__ import annotations

from transformers import AutoTokenizer

from finpipe.finetune import ner


def test_continuation_map_falls_back_to_the_b_tag():
    label2id = {"O": 0, "B-ORG": 1, "I-ORG": 2, "B-TICKER": 3}
    assert ner.continuation_labels(label2id) == {0: 0, 1: 2, 2: 2, 3: 3}


def test_all_subtoken_labels_with_a_b_only_type(tiny_bert):
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    words = ["Zyxwvut", "Qqqqqq", "rose"]
    tags = ["B-ORG", "B-TICKER", "O"]
    label2id = {"O": 0, "B-ORG": 1, "I-ORG": 2, "B-TICKER": 3}
    pieces = [len(tok(w, add_special_tokens=False)["input_ids"]) for w in words]
    assert pieces[0] > 1 and pieces[1] > 1  # both unknown words split into several pieces
    enc = ner.encode(tok, [words], [tags], label2id, max_length=32, stride=4, label_all_subtokens=True)
    row = enc.labels[0][1:-1]  # without [CLS] and [SEP]
    assert row == [1] + [2] * (pieces[0] - 1) + [3] * pieces[1] + [0] * pieces[2]
