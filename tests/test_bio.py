from finpipe.bio import bio_problem, to_bio


def test_io_to_bio_starts_each_run_with_b():
    tags, changed = to_bio(["O", "I-PER", "I-PER", "O", "I-ORG", "I-LOC", "I-LOC"])
    assert tags == ["O", "B-PER", "I-PER", "O", "B-ORG", "B-LOC", "I-LOC"]
    assert changed == 3


def test_valid_bio_is_unchanged():
    tags = ["B-ORG", "I-ORG", "O", "B-PER", "B-PER", "I-PER"]
    assert to_bio(tags) == (tags, 0)
    assert bio_problem(tags) is None


def test_bio_problem_names_the_token():
    assert bio_problem(["O", "I-ORG"]) == "token 2: I-ORG does not continue an entity of type ORG"
    assert bio_problem(["B-PER", "I-ORG"]).startswith("token 2")
    assert bio_problem(["X-ORG"]).startswith("token 1: tag 'X-ORG'")
