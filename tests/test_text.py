"""The shared normaliser: surface variants of one fact compare equal, different facts do not."""

from __future__ import annotations

import pytest

from assistant.text import contains_fact, normalize, tokens


@pytest.mark.parametrize("a, b", [
    ("Thirty days", "30 days"),
    ("twenty-one days", "21 days"),
    ("one hundred and twenty-five", "125"),
    ("two thousand five hundred", "2,500"),
    ("1,200", "1200"),
    ("$7.95", "7.95 dollars"),
    ("$45.00", "45 USD"),
    ("$9.50", "9.5"),
    ("20%", "twenty per cent"),
    ("3-5 business days", "3 to 5 business days"),
    ("The Return Window!", "return window"),
    ("Don\u2019t", "do not"),
    ("can't", "cannot"),
    ("9:00 am", "9 am"),
    ("first order", "1st order"),
    ("250g", "250 g"),
])
def test_variants_of_one_fact_normalise_alike(a: str, b: str) -> None:
    assert normalize(a) == normalize(b)


@pytest.mark.parametrize("a, b", [("$45", "$450"), ("7.95", "7.59"), ("21 days", "12 days"), ("one two", "3")])
def test_different_facts_stay_different(a: str, b: str) -> None:
    assert normalize(a) != normalize(b)


def test_decimals_survive_punctuation_removal() -> None:
    assert normalize("It costs $7.95.") == "it costs 7.95"
    assert tokens("size 9.5 shoes") == ["size", "9.5", "shoe"]


@pytest.mark.parametrize("text, fact, expected", [
    ("Returns are accepted within thirty days of delivery.", "30 days", True),
    ("a 30-day return window", "30 days", True),  # hyphenated adjective and plural fold
    ("The label costs $7.95 and is deducted.", "7.95 dollars", True),
    ("Closed on Sundays and Mondays.", "Monday", True),
    ("Shipping costs $450 for pallets.", "$45", False),  # whole tokens only
    ("Refunds take 5 business days.", "15 business days", False),
    ("Anything at all", "the", False),  # a fact that normalises to nothing is never contained
    ("Sizes run from 6 to 13.", "size", True),
])
def test_contains_fact(text: str, fact: str, expected: bool) -> None:
    assert contains_fact(text, fact) is expected


@pytest.mark.parametrize("a, b", [  # issue 12: paraphrases the old scorer called hallucinated
    ("eight hundred kilometres", "800 km"),
    ("800 kilometers", "800 km"),
    ("a hundred and fifty millilitres", "150 ml"),
    ("150 milliliters", "150ml"),
    ("fourteen dollars ninety-five", "$14.95"),
    ("fourteen dollars and ninety-five cents", "$14.95"),
    ("two kilograms", "2 kg"),
    ("within three working days", "within 3 business days"),
    ("3-5 days", "between 3 and 5 days"),
    ("3 to 5 days", "from three to five days"),
    ("first", "1st"),
    ("the twenty-first", "21st"),
    ("seventy millimetres", "7 cm"),
    ("three weeks", "21 days"),
    ("6:30 pm", "18:30"),
    ("11am-5pm", "11:00 to 17:00"),
    ("1.2 million", "1,200,000"),
    ("nine and a half", "9.5"),
    ("doesn't earn", "does not earn"),
    ("half price", "50% off"),
    ("free of charge", "free"),
    ("March 3rd", "the 3rd of March"),
    ("on the first of May", "on May 1"),
    ("Tues-Sat", "Tuesday to Saturday"),
    ("Monday–Friday", "Monday to Friday"),
    ("6 in the evening", "6 pm"),
    ("10 in the morning", "10:00"),
    ("at most half of an order", "at most 50% of an order"),
])
def test_paraphrases_of_numbers_units_ranges_and_synonyms(a: str, b: str) -> None:
    assert normalize(a) == normalize(b)


@pytest.mark.parametrize("a, b", [("800 km", "1000 km"), ("3 to 5 days", "3 or 5 days"), ("$14.95", "$14"),
                                  ("2 kg", "2 g"), ("10 am", "10 pm"), ("30 days", "30 weeks"),
                                  ("the sun sat low", "sunday to saturday")])
def test_different_quantities_stay_different(a: str, b: str) -> None:
    assert normalize(a) != normalize(b)


def test_fact_link_words_may_differ() -> None:
    assert contains_fact("on the final Friday in November", "last Friday of November")
    assert not contains_fact("on the last Friday in October", "last Friday of November")


def test_values_carry_units_groups_and_alternatives() -> None:
    from assistant.text import values

    got = values("Returns within 7, 14, 21 or 30 days; the label costs $7.95.")
    assert [(v.number, v.unit) for v in got] == [("7", "day"), ("14", "day"), ("21", "day"), ("30", "day"),
                                                 ("7.95", "usd")]
    assert all(v.disjunct for v in got[:4]) and not got[4].disjunct
    assert [(v.number, v.unit) for v in values("3-5 business days")] == [("3 to 5", "business day")]
    assert [(v.number, v.unit) for v in values("open 10 am to 1 pm")] == [("10", "oclock"), ("13", "oclock")]


def test_sentences_keep_abbreviations_and_prices_whole() -> None:
    from assistant.text import sentences

    assert sentences("The fee is $7.95, e.g. for returns. Call us.\nNext line") == (
        "The fee is $7.95, e.g. for returns.", "Call us.", "Next line")
