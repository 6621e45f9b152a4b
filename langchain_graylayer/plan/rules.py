"""Tag rules for explicit layer membership, and the guard against sensitive attributes."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from langchain_graylayer.errors import ConfigurationError
from langchain_graylayer.plan._config import load_yaml

__all__ = [
    "NOT_SENSITIVE",
    "SENSITIVE_ATTRIBUTES",
    "SENSITIVE_CATEGORIES",
    "TagRule",
    "attribute_words",
    "sensitive_category",
    "sensitive_word",
]

SENSITIVE_CATEGORIES: dict[str, tuple[str, ...]] = {
    # GDPR Art. 9(1): the special categories of personal data
    "racial or ethnic origin": (
        "race", "racial", "ethnicity", "ethnic", "ethnicities", "ethn", "caste", "tribe",
        "skin colour", "skin color", "skin tone", "ancestry", "ethnic origin", "racial origin",
    ),
    "political opinions": ("political", "politics", "party affiliation", "voting"),
    "religious or philosophical beliefs": (
        "religion", "religious", "relig", "faith", "belief", "beliefs", "worldview",
        "denomination",
    ),
    "trade union membership": ("trade union", "union member", "union membership", "unionized"),
    "genetic data": ("genetic", "genetics", "genome", "dna", "genotype"),
    "biometric data": ("biometric", "biometrics", "fingerprint", "face id"),
    "health": (
        "health", "medical", "disease", "diagnosis", "illness", "medication",
        "prescription", "mental", "hiv",
    ),
    "sex life or sexual orientation": (
        "sexual", "sexuality", "orientation", "sex life", "lgbt", "lgbtq", "gay", "lesbian",
        "bisexual", "heterosexual", "homosexual",
    ),
    # GDPR Art. 10, and the protected characteristics of EU, UK and US anti-discrimination law
    "criminal convictions and offences": ("criminal", "conviction", "convictions", "offence",
                                          "offense", "arrest", "arrests"),
    "age": ("age", "dob", "birthdate", "birthday", "birth date", "birth year", "date of birth",
            "year of birth", "born"),
    "sex and gender": ("sex", "gender", "transgender", "gender identity"),
    "marital or family status": ("marital", "married", "marriage", "spouse", "civil partnership",
                                 "family status"),
    "pregnancy and maternity": ("pregnancy", "pregnant", "maternity", "paternity"),
    "disability": ("disability", "disabilities", "disabled", "disab", "handicap", "impairment"),
    "national origin and citizenship": (
        "nationality", "national origin", "citizenship", "citizen", "birth country",
        "birth place", "birthplace", "country of birth", "place of birth", "immigration",
        "immigrant", "migrant", "refugee", "asylum", "native language", "mother tongue",
    ),
    "veteran status": ("veteran",),
}  # fmt: skip
"""Protected categories and the words that name them: a tag rule on an attribute named by any of
them is refused (see :func:`sensitive_word`). GDPR Art. 9 and 10, plus the characteristics
anti-discrimination law protects (EU Charter Art. 21, UK Equality Act 2010, US Civil Rights Act
Title VII, ADEA, ADA, PDA)."""

SENSITIVE_ATTRIBUTES: frozenset[str] = frozenset(
    "_".join(term.split()) for terms in SENSITIVE_CATEGORIES.values() for term in terms
)
"""Every word and phrase (words joined by ``_``) of :data:`SENSITIVE_CATEGORIES`."""

NOT_SENSITIVE: frozenset[str] = frozenset(
    {
        "race_team", "race_car", "race_track", "race_condition", "arms_race", "race_day",
        "screen_orientation", "device_orientation", "page_orientation", "image_orientation",
        "account_age", "cache_age", "session_age", "token_age", "max_age", "data_age",
        "health_check", "service_health", "system_health", "account_health", "health_score",
        "device_fingerprint", "browser_fingerprint",
    }
)  # fmt: skip
"""Two-word phrases in which a sensitive word means something else (a racing team, a screen's
orientation, an account's age, a service's health): that word is not counted there."""

_LONGEST = max(len(term.split("_")) for term in SENSITIVE_ATTRIBUTES)


def attribute_words(attribute: str) -> list[str]:
    """``attribute`` split into lower-case words at ``.``, ``_``, ``-``, spaces, digits and
    camelCase: ``"user.skinColour2"`` → ``["user", "skin", "colour", "2"]``."""
    spaced = re.sub(r"([a-z0-9])([A-Z])|([A-Z])([A-Z][a-z])|([A-Za-z])([0-9])|([0-9])([A-Za-z])",
                    lambda m: " ".join(g for g in m.groups() if g), attribute)  # fmt: skip
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]


def sensitive_word(attribute: str) -> str | None:
    """The sensitive word or phrase ``attribute`` is named by, if any.

    Whole words count, never substrings (``"usage"``, ``"agent"``, ``"language"`` pass);
    phrases of up to three words count too (``"skin_colour"``, ``"birth_country"``), and a
    plural ``s`` is ignored. A word inside a phrase of :data:`NOT_SENSITIVE` is not counted
    (``"race_team"``).

    Example:
        >>> sensitive_word("user.maritalStatus"), sensitive_word("race_team")
        ('marital', None)
    """
    words = attribute_words(attribute)
    excused: set[int] = set()
    for i in range(len(words) - 1):
        if f"{words[i]}_{words[i + 1]}" in NOT_SENSITIVE:
            excused.update((i, i + 1))
    for size in range(_LONGEST, 0, -1):  # the longest phrase names the category best
        for i in range(len(words) - size + 1):
            span = range(i, i + size)
            if size == 1 and i in excused:
                continue
            phrase = "_".join(words[j] for j in span)
            singular = phrase[:-1] if phrase.endswith("s") and len(phrase) > 3 else phrase
            for term in (phrase, singular):
                if term in SENSITIVE_ATTRIBUTES:
                    return term
    return None


def sensitive_category(attribute: str) -> str | None:
    """The protected category ``attribute`` falls in (``"age"``, ``"health"``, ...), if any."""
    word = sensitive_word(attribute)
    if word is None:
        return None
    return next(
        name
        for name, terms in SENSITIVE_CATEGORIES.items()
        if word in {"_".join(t.split()) for t in terms}
    )


_RULE = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(==|!=|not\s+in|in)\s*(.+?)\s*$")


@dataclass(frozen=True, slots=True)
class TagRule:
    """A membership rule on one profile tag: ``group == "staff"``, ``tier in [beta, alpha]``.

    Example:
        >>> rule = TagRule.parse('group == "staff"')
        >>> rule.matches({"group": "staff"}), rule.matches({"group": "x"}), rule.matches({})
        (True, False, False)
    """

    attribute: str
    operator: Literal["==", "!=", "in", "not in"]
    values: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> TagRule:
        """Parse ``ATTR == VALUE``, ``ATTR != VALUE``, ``ATTR in [V, ...]``, ``ATTR not in [...]``.

        Raises:
            ConfigurationError: on bad syntax, or when the attribute is sensitive.
        """
        match = _RULE.match(text)
        if match is None:
            raise ConfigurationError(
                "", text, 'a rule such as group == "staff" or tier in [beta, alpha]'
            )
        attribute, operator, raw = match.group(1), " ".join(match.group(2).split()), match.group(3)
        word = sensitive_word(attribute)
        if word is not None:
            raise ConfigurationError(
                "",
                text,
                f"a rule on an allowed attribute: {attribute!r} is sensitive ({word!r}: "
                f"{sensitive_category(attribute)}); layering may not use a protected "
                "characteristic (racial or ethnic origin, political opinions, religion, trade "
                "union membership, genetic or biometric data, health, sex life or sexual "
                "orientation, criminal record, age, sex or gender, marital status, pregnancy, "
                "disability, national origin)",
            )
        try:  # a rule is one line: a small bound on what its value may expand to
            parsed = load_yaml(raw, max_bytes=10_000, max_nodes=1_000)
        except ConfigurationError:
            parsed = None
        if operator in ("in", "not in"):
            if not isinstance(parsed, list) or not parsed:
                raise ConfigurationError("", text, f"a non-empty list after '{operator}'")
            values = tuple(str(v) for v in parsed)
        else:
            if parsed is None or isinstance(parsed, (list, dict)):
                raise ConfigurationError("", text, f"a single value after '{operator}'")
            values = (str(parsed),)
        return cls(attribute, operator, values)  # type: ignore[arg-type]

    def matches(self, tags: Mapping[str, str]) -> bool:
        """True when ``tags`` satisfy the rule; a missing attribute never matches."""
        if self.attribute not in tags:
            return False
        inside = str(tags[self.attribute]) in self.values
        return inside if self.operator in ("==", "in") else not inside

    def __str__(self) -> str:
        if self.operator in ("==", "!="):
            return f"{self.attribute} {self.operator} {self.values[0]!r}"
        return f"{self.attribute} {self.operator} {list(self.values)!r}"
