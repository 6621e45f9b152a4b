"""The sensitive-attribute guard, from a table of attribute names (tests/data/sensitive_attributes
.json): whole words and phrases of the protected categories are refused, substrings never."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from langchain_graylayer.errors import ConfigurationError
from langchain_graylayer.plan.rules import (
    SENSITIVE_ATTRIBUTES,
    SENSITIVE_CATEGORIES,
    TagRule,
    sensitive_category,
    sensitive_word,
)

TABLE = json.loads(
    (Path(__file__).parents[1] / "data" / "sensitive_attributes.json").read_text("utf-8")
)


@pytest.mark.parametrize(("attribute", "word"), TABLE["rejected"].items())
def test_a_rule_on_a_sensitive_attribute_is_refused_naming_its_word(
    attribute: str, word: str
) -> None:
    assert sensitive_word(attribute) == word
    with pytest.raises(ConfigurationError, match="sensitive") as info:
        TagRule.parse(f"{attribute} == x")
    assert repr(word) in str(info.value)
    assert str(sensitive_category(attribute)) in str(info.value)


@pytest.mark.parametrize("attribute", TABLE["accepted"])
def test_a_rule_on_an_ordinary_attribute_is_accepted(attribute: str) -> None:
    assert sensitive_word(attribute) is None
    assert TagRule.parse(f"{attribute} == x").attribute == attribute


def test_the_categories_cover_gdpr_article_9_and_common_protected_characteristics() -> None:
    expected = {
        "racial or ethnic origin", "political opinions", "religious or philosophical beliefs",
        "trade union membership", "genetic data", "biometric data", "health",
        "sex life or sexual orientation", "age", "sex and gender", "marital or family status",
        "pregnancy and maternity", "disability", "national origin and citizenship",
    }  # fmt: skip
    assert expected <= set(SENSITIVE_CATEGORIES)
    for category, terms in SENSITIVE_CATEGORIES.items():
        for term in terms:  # every term is refused, in the category it is listed under
            assert sensitive_category(term.replace(" ", "_")) == category, term
    assert {"race", "skin_colour", "date_of_birth"} <= SENSITIVE_ATTRIBUTES


def test_the_docs_list_every_category() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "background.md").read_text("utf-8")
    for category in SENSITIVE_CATEGORIES:
        assert category in docs, category
