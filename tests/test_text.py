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
