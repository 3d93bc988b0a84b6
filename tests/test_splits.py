from collections import Counter

from finpipe.splits import group_split, hashed_split, stratified_group_split


def test_hashed_split_is_deterministic_and_near_fraction():
    keys = [f"doc{i}" for i in range(5000)]
    a = [hashed_split(k, 1, 0.1) for k in keys]
    assert a == [hashed_split(k, 1, 0.1) for k in keys]
    assert 0.08 < a.count("dev") / len(a) < 0.12
    assert a != [hashed_split(k, 2, 0.1) for k in keys]


def test_stratified_group_split_keeps_groups_together_and_stratifies():
    labels = ["pos"] * 500 + ["neg"] * 200 + ["neu"] * 300
    groups = [f"t{i // 2}" for i in range(1000)]  # every text appears twice
    splits = stratified_group_split(groups, labels, seed=3, dev=0.1, test=0.2)
    assert splits == stratified_group_split(groups, labels, seed=3, dev=0.1, test=0.2)
    by_group = {}
    for g, s in zip(groups, splits):
        assert by_group.setdefault(g, s) == s
    for label, n in Counter(labels).items():
        got = Counter(s for s, lab in zip(splits, labels) if lab == label)
        assert abs(got["test"] - 0.2 * n) <= 2 and abs(got["dev"] - 0.1 * n) <= 2


def test_stratified_split_single_member_class_stays_in_train():
    assert stratified_group_split(["a", "b", "c"], ["x", "x", "rare"], 0, 0.3, 0.3)[2] == "train"


def test_group_split_by_document_fractions_and_no_straddling():
    groups = [f"d{i // 10}" for i in range(1000)]
    splits = group_split(groups, seed=5, dev=0.1, test=0.1)
    counts = Counter(splits)
    assert 80 <= counts["test"] <= 125 and 80 <= counts["dev"] <= 125
    assert len({(g, s) for g, s in zip(groups, splits)}) == 100


def test_group_split_few_large_documents_still_gets_dev_and_test():
    groups = ["a"] * 277 + ["b"] * 90 + ["c"] * 273 + ["d"] * 396 + ["e"] * 133
    counts = Counter(group_split(groups, seed=13, dev=0.12, test=0.12))
    assert counts["dev"] > 0 and counts["test"] > 0 and counts["train"] > 600
