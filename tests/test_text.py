from finpipe.text import normalise, split_sentences, strip_markup


def test_split_keeps_abbreviations_numbers_and_order():
    text = (
        "Norvik Inc. said profit rose 5.93 mln dlrs. Sales in the U.S. fell 2.5 pct. "
        'J. Smith, chief executive, said: "We are pleased." Shares rose! Why? Because.'
    )
    assert split_sentences(text) == [
        "Norvik Inc. said profit rose 5.93 mln dlrs.",
        "Sales in the U.S. fell 2.5 pct.",
        'J. Smith, chief executive, said: "We are pleased."',
        "Shares rose!",
        "Why?",
        "Because.",
    ]


def test_split_without_terminal_punctuation_and_empty():
    assert split_sentences("no full stop here") == ["no full stop here"]
    assert split_sentences("") == []


def test_normalise_collapses_whitespace_and_nfkc_but_keeps_control_chars_for_validation():
    assert normalise("  Net\tprofit\n\n rose\u00a0\ufb01ve  ") == "Net profit rose five"
    assert normalise("bad\x00byte") == "bad\x00byte"


def test_strip_markup_removes_tags_before_unescaping_entities():
    assert strip_markup("<p>Profit &amp; loss</p> of &lt;ABC Corp&gt;") == " Profit & loss  of <ABC Corp>"
    assert strip_markup("growth < 5% and > 2%") == "growth < 5% and > 2%"
