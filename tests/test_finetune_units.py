"""Fast units of fine-tuning: windows and stitching, sub-token labels, CORAL, learning-rate
groups and gradual unfreezing."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from helpers import hand_cross_entropy
from transformers import AutoTokenizer, BertConfig

from finpipe.finetune import ner
from finpipe.finetune.discriminative import GradualUnfreezing, layer_of, param_groups
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
    spans = ner.window_spans(word_ids, body, stride)
    assert spans[0][0] == 0 and spans[-1][1] == len(word_ids)
    for (s0, e0), (s1, _e1) in zip(spans, spans[1:]):
        # forward and contiguous; the overlap is the stride, plus the start of a word cut by it
        assert s0 < s1 <= e0 and stride <= e0 - s1 <= stride + 1
    assert all(0 < e - s <= body for s, e in spans)


def test_windows_start_at_word_boundaries_when_they_can():
    word_ids = [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
    spans = ner.window_spans(word_ids, body=6, stride=2)
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


def _tiny_sentiment(target: str, weight: float = 0.0, pooling: str = "mean", **spec: Any) -> SentimentModel:
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32)
    config.finpipe_sentiment = make_spec(
        task="t",
        labels=list("abcde"),
        target=target,
        has_score=weight > 0,
        score_range=(-1, 1),
        head={"pooling": pooling, "dropout": 0.0, "hidden_size": 0},
        score_loss_weight=weight,
        **spec,
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


WEIGHTS = [0.5, 1.0, 2.0, 4.0, 0.25]


def _spread(model: SentimentModel) -> SentimentModel:
    """Logits spread by the head's bias (the text moves them a little): with these and the labels
    of _batch, the loss with or without weights, with or without smoothing, differ by > 0.3."""
    with torch.no_grad():
        model.classes.bias.copy_(torch.tensor([4.0, -2.0, 1.0, 2.0, -4.0]))
    return model.eval()


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids = torch.randint(5, 50, (6, 7), generator=torch.Generator().manual_seed(0))
    return ids, torch.ones_like(ids), torch.tensor([0, 1, 2, 4, 4, 4])


@pytest.mark.parametrize(
    "loss, smoothing",
    [("cross_entropy", 0.0), ("weighted_cross_entropy", 0.0), ("cross_entropy", 0.2), ("weighted_cross_entropy", 0.2)],
)
def test_class_weights_and_label_smoothing_reach_the_loss(loss, smoothing):
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the same encoder whatever ran before
        model = _spread(_tiny_sentiment("classes", loss=loss, label_smoothing=smoothing, class_weights=WEIGHTS))
    ids, mask, labels = _batch()
    out = model(ids, mask, labels=labels)
    logits = out.logits.detach().numpy()
    used = WEIGHTS if loss == "weighted_cross_entropy" else None
    assert out.loss.item() == pytest.approx(hand_cross_entropy(logits, labels, used, smoothing), rel=1e-5)
    for other in [(w, e) for w in (None, WEIGHTS) for e in (0.0, 0.2) if (w, e) != (used, smoothing)]:
        # each option moves this loss well beyond the tolerance, so one that does not reach it shows
        assert abs(out.loss.item() - hand_cross_entropy(logits, labels, *other)) > 0.1


def test_class_weights_reach_the_loss_of_a_model_from_pretrained(tmp_path):
    """As the stage builds its model (a BERT checkpoint + the spec in the config) and as predict /
    evaluate reload the fine-tuned one: the loss must still weigh the classes."""
    from transformers import AutoConfig, BertModel

    base = _tiny_sentiment("classes")
    BertModel(base.config).save_pretrained(tmp_path / "bert")
    config = AutoConfig.from_pretrained(tmp_path / "bert")
    config.finpipe_sentiment = {**base.spec, "loss": "weighted_cross_entropy", "class_weights": WEIGHTS}
    ids, mask, labels = _batch()
    model = _spread(SentimentModel.from_pretrained(tmp_path / "bert", config=config))
    model.save_pretrained(tmp_path / "fine-tuned")
    again = SentimentModel.from_pretrained(tmp_path / "fine-tuned").eval()
    for m in (model, again):
        out = m(ids, mask, labels=labels)
        assert out.loss.item() == pytest.approx(hand_cross_entropy(out.logits.detach().numpy(), labels, WEIGHTS), rel=1e-5)


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


def test_layer_decay_and_head_rate_reach_the_trainers_optimizer(tmp_path):
    """The stage's Trainer must build its optimizer from param_groups (not its own groups) and
    its scheduler must scale every group from that group's own rate."""
    from finpipe.config import FinetuneTrain, parse
    from finpipe.training import Trainer, training_arguments

    model = _tiny_sentiment("classes", pooling="cls")
    cfg = parse(
        FinetuneTrain,
        {"learning_rate": 1e-4, "head_learning_rate": 1e-3, "layer_decay": 0.5, "warmup_ratio": 0.0, "bf16": False},
    )
    groups = param_groups(
        model,
        learning_rate=cfg.learning_rate,
        head_learning_rate=cfg.head_learning_rate,
        layer_decay=cfg.layer_decay,
        weight_decay=cfg.weight_decay,
    )
    args = training_arguments(cfg, tmp_path, label_names=["labels"], bf16=False, save=False, seed=0)
    trainer = Trainer(model=model, args=args, param_groups=groups)
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    optimizer = trainer.optimizer
    name = {id(p): n for n, p in model.named_parameters()}
    assert sorted(name[id(p)] for g in optimizer.param_groups for p in g["params"]) == sorted(name.values())

    def rates() -> dict[int | None, float]:
        """depth (None = head) -> the one learning rate its parameters have in the optimizer"""
        out: dict[int | None, set[float]] = {}
        for g in optimizer.param_groups:
            for p in g["params"]:
                out.setdefault(layer_of(name[id(p)], 3), set()).add(g["lr"])
        assert all(len(v) == 1 for v in out.values()), out
        return {depth: v.pop() for depth, v in out.items()}

    # head 1e-3; pooler (4) and top layer (3) 1e-4, then halved per layer down to the embeddings
    expected = {None: 1e-3, 4: 1e-4, 3: 1e-4, 2: 5e-5, 1: 2.5e-5, 0: 1.25e-5}
    got = rates()
    assert got.keys() == expected.keys()
    assert all(got[d] == pytest.approx(expected[d]) for d in expected), got
    for g in optimizer.param_groups:
        decays = {not name[id(p)].endswith(("bias", "LayerNorm.weight")) for p in g["params"]}
        assert g["weight_decay"] == (cfg.weight_decay if decays == {True} else 0.0) and len(decays) == 1
    for _ in range(4):  # the linear schedule scales every group alike
        optimizer.step()
        trainer.lr_scheduler.step()
    got = rates()
    assert all(got[d] == pytest.approx(expected[d] * 0.6) for d in expected), got
