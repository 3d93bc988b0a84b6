import pytest

from finpipe.text import _BOUNDARY, normalise, split_sentences, strip_markup


def test_split_keeps_numbers_quotes_and_order():
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


@pytest.mark.parametrize(
    "text",
    [
        # listed abbreviations, before a capital or a digit
        "Norvik Inc. Chief executive Mr. Smith said on Jan. 5 that sales rose.",
        # listed, behind an opening bracket or quote
        'Analysts at (Norvik Corp. Research) and "Ltd. Partners" agreed.',
        # dotted acronyms
        "Sales in the U.S. Treasury market and the U.K. Gilt market fell.",
        # single initials
        "Chief executive J. Smith and K. Lee resigned.",
    ],
    ids=["listed", "listed-after-bracket-or-quote", "dotted-acronyms", "initials"],
)
def test_abbreviations_before_a_capital_do_not_end_the_sentence(text):
    both = f"{text} Shares rose. Profit fell."
    # every ". " here is followed by a capital or a digit, so each is a candidate boundary that
    # only the abbreviation rule keeps from being a split: the rule is reached
    assert len(list(_BOUNDARY.finditer(both))) == text.count(". ") + 2
    assert split_sentences(both) == [text, "Shares rose.", "Profit fell."]


def test_a_word_that_is_not_an_abbreviation_ends_the_sentence():
    assert split_sentences("Profit rose at Norvik. Chief executive Smith said so.") == [
        "Profit rose at Norvik.",
        "Chief executive Smith said so.",
    ]
    assert split_sentences("Sales fell 5. Shares rose.") == ["Sales fell 5.", "Shares rose."]


def test_split_without_terminal_punctuation_and_empty():
    assert split_sentences("no full stop here") == ["no full stop here"]
    assert split_sentences("") == []


def test_normalise_collapses_whitespace_and_nfkc_but_keeps_control_chars_for_validation():
    assert normalise("  Net\tprofit\n\n rose\u00a0\ufb01ve  ") == "Net profit rose five"
    assert normalise("bad\x00byte") == "bad\x00byte"


def test_strip_markup_removes_tags_before_unescaping_entities():
    assert strip_markup("<p>Profit &amp; loss</p> of &lt;ABC Corp&gt;") == " Profit & loss  of <ABC Corp>"
    assert strip_markup("growth < 5% and > 2%") == "growth < 5% and > 2%"
