"""Fast units of fine-tuning: windows and stitching, sub-token labels, CORAL, learning-rate
groups and gradual unfreezing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig

from finpipe.finetune import ner
from finpipe.finetune.layers import GradualUnfreezing, layer_of, param_groups
from finpipe.finetune.sentiment import (
    SentimentModel,
    class_probabilities,
    init_thresholds,
    inverse_frequency_weights,
    make_spec,
    predicted_class,
)


@pytest.mark.parametrize("n,body,stride", [(5, 10, 2), (40, 10, 3), (101, 14, 6), (23, 8, 0)])
def test_windows_cover_every_token_within_size(n, body, stride):
    rng = np.random.default_rng(n)
    word_ids = np.repeat(np.arange(n), rng.integers(1, 3, n)).tolist()[:n]
    spans = ner.window_starts(word_ids, body, stride)
    assert spans[0][0] == 0 and spans[-1][1] == len(word_ids)
    for (s0, e0), (s1, _e1) in zip(spans, spans[1:]):
        # forward and contiguous; the overlap is the stride, plus the start of a word cut by it
        assert s0 < s1 <= e0 and stride <= e0 - s1 <= stride + 1
    assert all(0 < e - s <= body for s, e in spans)


def test_windows_start_at_word_boundaries_when_they_can():
    word_ids = [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
    spans = ner.window_starts(word_ids, body=6, stride=2)
    for s, _ in spans[1:]:
        assert word_ids[s - 1] != word_ids[s]


class Oracle(torch.nn.Module):
    """Predicts, at every position, the tag id derived from the input token id: stitching must
    return, for every word, exactly the tag of its first sub-token."""

    def __init__(self, num_labels: int) -> None:
        super().__init__()
        self.num_labels = num_labels
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.config = BertConfig(id2label={i: f"T{i}" for i in range(num_labels)})

    def forward(self, input_ids, attention_mask):
        return type("Out", (), {"logits": torch.nn.functional.one_hot(input_ids % self.num_labels, self.num_labels).float()})


def test_stitching_reads_each_word_from_its_first_sub_token(tiny_bert):
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    sentences = [
        "Corvallis Motors opened a plant near Mumbai employing about 5000 people .".split() * 5,
        ["Short", "one", "."],
        ["Zyxwvut", "Qqqqqq", "unbelievablyloooongword"] * 7,
    ]
    tags, enc = ner.predict_words(Oracle(7), tok, sentences, max_length=12, stride=4, batch_size=3)
    assert enc.windowed_sentences == 2
    for words, pred in zip(sentences, tags, strict=True):
        first_ids = [tok(w, add_special_tokens=False)["input_ids"][0] for w in words]
        assert pred == [f"T{i % 7}" for i in first_ids]


def test_labels_on_first_sub_token_or_all(tiny_bert):
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    words = ["Zyxwvut", "Mining", "rose"]
    tags = ["B-ORG", "I-ORG", "O"]
    label2id = {"O": 0, "B-ORG": 1, "I-ORG": 2}
    pieces = [len(tok(w, add_special_tokens=False)["input_ids"]) for w in words]
    assert pieces[0] > 1  # an unknown word splits
    first = ner.encode(tok, [words], [tags], label2id, max_length=32, stride=4)
    expected = [-100]
    for n, t in zip(pieces, tags, strict=True):
        expected += [label2id[t]] + [-100] * (n - 1)
    assert first.labels[0] == expected + [-100]
    every = ner.encode(tok, [words], [tags], label2id, max_length=32, stride=4, label_all_subtokens=True)
    expected = [-100]
    for n, t in zip(pieces, tags, strict=True):
        expected += [label2id[t]] + [label2id["I-" + t[2:]] if t != "O" else 0] * (n - 1)
    assert every.labels[0] == expected + [-100]


def test_bio_spans():
    assert ner.spans(["B-PER", "I-PER", "O", "I-ORG", "I-ORG", "B-ORG", "I-LOC"]) == [
        ("PER", 0, 1),
        ("ORG", 3, 4),
        ("ORG", 5, 5),
        ("LOC", 6, 6),
    ]


def test_coral_probabilities_and_thresholds():
    logits = np.array([[3.0, 1.0, -1.0, -3.0], [-5.0, -6.0, -7.0, -8.0], [0.5, 2.0, -1.0, -2.0]])
    probs = class_probabilities(logits, "ordinal")
    assert np.allclose(probs.sum(1), 1) and (probs >= 0).all()
    assert predicted_class(logits, "ordinal").tolist() == [2, 0, 2]
    sig = 1 / (1 + np.exp(-logits[0]))
    assert probs[0].tolist() == pytest.approx([1 - sig[0], sig[0] - sig[1], sig[1] - sig[2], sig[2] - sig[3], sig[3]])
    softmax = class_probabilities(np.array([[0.0, np.log(3.0)]]), "classes")
    assert softmax.tolist()[0] == pytest.approx([0.25, 0.75])
    assert inverse_frequency_weights([0, 0, 0, 1], 3) == pytest.approx([4 / 9, 4 / 3, 1.0])


def _tiny_sentiment(target: str, weight: float = 0.0) -> SentimentModel:
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32)
    config.finpipe_sentiment = make_spec(
        task="t",
        labels=list("abcde"),
        target=target,
        has_score=weight > 0,
        score_range=(-1, 1),
        head={"pooling": "mean", "dropout": 0.0, "hidden_size": 0},
        score_loss_weight=weight,
    )
    return SentimentModel(config)


def test_coral_bias_starts_at_the_prior_and_reloads(tmp_path):
    model = _tiny_sentiment("ordinal", 1.0)
    labels = [0] * 10 + [1] * 20 + [2] * 40 + [3] * 20 + [4] * 10
    init_thresholds(model, labels)
    above = 1 / (1 + np.exp(-model.classes.bias.detach().numpy()))
    assert above == pytest.approx([0.9, 0.7, 0.3, 0.1], abs=0.01)
    ids = torch.randint(5, 50, (3, 7))
    mask = torch.ones_like(ids)
    out = model(ids, mask, labels=torch.tensor([0, 2, 4]), scores=torch.tensor([-0.5, float("nan"), 0.9]))
    assert out.logits.shape == (3, 4) and out.score.shape == (3,) and torch.isfinite(out.loss)
    out.loss.backward()
    model.save_pretrained(tmp_path)
    again = SentimentModel.from_pretrained(tmp_path).eval()
    model.eval()
    assert torch.allclose(again(ids, mask).logits, model(ids, mask).logits, atol=1e-6)


def test_layer_wise_learning_rates_and_no_decay_groups():
    model = _tiny_sentiment("classes")
    groups = param_groups(model, learning_rate=1e-4, head_learning_rate=1e-3, layer_decay=0.5, weight_decay=0.01)
    by_name = {id(p): g for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert by_name[id(named["classes.weight"])]["lr"] == 1e-3
    assert by_name[id(named["bert.encoder.layer.2.attention.self.query.weight"])]["lr"] == pytest.approx(1e-4)
    assert by_name[id(named["bert.encoder.layer.1.attention.self.query.weight"])]["lr"] == pytest.approx(5e-5)
    assert by_name[id(named["bert.embeddings.word_embeddings.weight"])]["lr"] == pytest.approx(1e-4 * 0.5**3)
    assert by_name[id(named["bert.encoder.layer.0.output.LayerNorm.weight"])]["weight_decay"] == 0.0
    assert by_name[id(named["bert.encoder.layer.0.output.dense.bias"])]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(named)
    assert layer_of("classes.weight", 3) is None and layer_of("bert.pooler.dense.weight", 3) == 4


def test_gradual_unfreezing_schedule():
    model = _tiny_sentiment("classes")
    cb = GradualUnfreezing(model, every=10)

    def trainable() -> set[int | None]:
        return {layer_of(n, 3) for n, p in model.named_parameters() if p.requires_grad}

    cb.apply(0)
    assert trainable() == {None}  # head only (mean pooling: no pooler)
    cb.apply(10)
    assert trainable() == {None, 3}  # top encoder layer
    cb.apply(25)
    assert trainable() == {None, 2, 3}
    cb.apply(100)
    assert trainable() == {None, 0, 1, 2, 3}  # embeddings last
