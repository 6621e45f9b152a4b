"""Tag rules for explicit layer membership, and the guard against sensitive attributes."""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import yaml

from langchain_graylayer.errors import ConfigurationError

__all__ = ["SENSITIVE_ATTRIBUTES", "TagRule", "sensitive_word"]

SENSITIVE_ATTRIBUTES: frozenset[str] = frozenset(
    {
        "race", "racial", "ethnicity", "ethnic", "nationality", "caste",
        "gender", "sex", "sexual", "sexuality",
        "religion", "religious", "faith",
        "health", "medical", "disability", "diagnosis", "pregnancy", "pregnant",
        "political", "politics", "genetic", "biometric", "trade_union",
    }
)  # fmt: skip
"""Words that make a tag unusable for layering (special categories of personal data)."""


def sensitive_word(attribute: str) -> str | None:
    """Return the sensitive word that ``attribute`` contains, if any.

    The attribute is split into words at ``.``, ``_``, ``-``, spaces and camelCase, so
    ``"user.sexualOrientation"`` and ``"trade-union"`` are caught while ``"usage"`` is not.
    """
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", attribute)
    words = [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]
    pairs = [f"{a}_{b}" for a, b in itertools.pairwise(words)]
    return next((w for w in [*words, *pairs] if w in SENSITIVE_ATTRIBUTES), None)


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
                f"a rule on an allowed attribute: {attribute!r} is sensitive ({word!r}); "
                "layering may not use race, ethnicity, gender, religion, health, sexual "
                "orientation, political opinion or similar attributes",
            )
        try:
            parsed = yaml.safe_load(raw)
        except yaml.YAMLError:
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
