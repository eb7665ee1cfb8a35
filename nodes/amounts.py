"""Amounts of money as people write them ("$20", "20 dollars", "149.00 USD", "EUR 5", "-5$"),
read exactly from text: what a customer asks back, and what a reply promises.

Read as decimals from the characters written, never through a float, so "$99999999999999999999"
stays that number instead of becoming 1e+20, and a sign or a zero is kept for the check that
refuses it (`refundable_cents`).
"""

from __future__ import annotations

import functools
import re
from decimal import Decimal, InvalidOperation
from typing import NamedTuple

from nodes.orders import MAX_AMOUNT_CENTS

_NUMBER = r"(?:\d(?:[\d,]*\d)?(?:\.\d+)?|\.\d+)"
_SIGN = r"(?:(?<![\w.])[-−])?"
_SYMBOL = r"[$€£]"
_WORD = r"(?:usd|eur|gbp|dollars?|euros?|pounds?|bucks?|cents?)"
#: ISO 4217 codes written in capitals ("1000 JPY"); a currency an order uses is added per call
ISO_CODES = frozenset(
    "USD EUR GBP JPY CHF CAD AUD NZD SEK NOK DKK ISK PLN CZK HUF RON BGN UAH INR CNY HKD SGD KRW TWD THB MYR IDR "
    "BRL MXN ARS CLP COP ZAR TRY ILS AED SAR".split()
)


@functools.lru_cache(maxsize=64)
def _money(codes: frozenset[str]) -> re.Pattern[str]:
    """A number with a currency symbol, word or one of `codes` before or after it."""
    iso = "(?-i:" + "|".join(sorted(codes)) + ")"
    return re.compile(
        rf"(?P<s1>{_SIGN}){_SYMBOL}\s?(?P<s2>[-−]?)(?P<a>{_NUMBER})"
        rf"|(?P<s3>{_SIGN})(?P<b>{_NUMBER})\s?(?:{_SYMBOL}|(?:{_WORD}|{iso})\b)"
        rf"|\b(?:usd|eur|gbp|{iso})\s?(?P<s4>[-−]?)(?P<c>{_NUMBER})",
        re.IGNORECASE,
    )


#: any number written, with its sign
NUMBER = re.compile(rf"{_SIGN}{_NUMBER}")


class Mention(NamedTuple):
    text: str
    value: Decimal


def _decimal(text: str) -> Decimal | None:
    try:
        return Decimal(text.replace(",", "").replace("−", "-"))
    except InvalidOperation:
        return None


def money_mentions(text: str, currency: str = "") -> list[Mention]:
    """Every amount of money the text writes, in order, with its sign; `currency`: a code
    to read besides the usual ones (the order's)."""
    found = []
    for match in _money(ISO_CODES | {currency} - {""}).finditer(text or ""):
        digits = match.group("a") or match.group("b") or match.group("c")
        negative = any(match.group(g) for g in ("s1", "s2", "s3", "s4"))
        value = _decimal(digits)
        if value is not None:
            if match.group("b") and re.search(r"cents?\b", match.group(0), re.IGNORECASE):
                value = value / 100
            found.append(Mention(match.group(0).strip(), -value if negative else value))
    return found


def written_numbers(text: str) -> list[Mention]:
    """Every number the text writes, with its sign ("5-10 days" is 5 and 10, not -10)."""
    return [Mention(m.group(0), v) for m in NUMBER.finditer(text or "") if (v := _decimal(m.group(0))) is not None]


def refundable_cents(value: Decimal) -> int | None:
    """The amount in cents, or None when no refund can be of it: zero, negative, not a
    number, finer than a cent, or beyond any order (orders.MAX_AMOUNT_CENTS)."""
    if not value.is_finite() or value <= 0:
        return None
    cents = value * 100
    if cents != cents.to_integral_value() or cents > MAX_AMOUNT_CENTS:
        return None
    return int(cents)


def same_amount(written: Decimal, read: Decimal) -> bool:
    """Is `read` (a model's number, which went through a float) the number written? Exact for
    any amount a refund can be; within a float's precision for the absurd ones."""
    return abs(written - read) <= max(Decimal("0.001"), abs(written) * Decimal("1e-12"))


#: what a symbol or word names (None: any dollar, USD, CAD, AUD, ...), the first found deciding
_NAMES = (("$", None), ("dollar", None), ("buck", None), ("€", "EUR"), ("euro", "EUR"), ("eur", "EUR"),
          ("£", "GBP"), ("pound", "GBP"), ("gbp", "GBP"), ("usd", "USD"))


def in_currency(text: str, currency: str) -> bool:
    """Could the amount written as `text` be in `currency`? False only when it names another."""
    code = re.search(r"\b[A-Z]{3}\b", text)
    if code:
        return code.group(0) == currency
    lowered = text.lower()
    for name, named in _NAMES:
        if name in lowered:
            return currency.endswith("D") if named is None else named == currency
    return True


def replace_amount(text: str, old: Decimal, new: str, currency: str = "") -> str:
    """`text` with every amount of money worth `old` written as `new` instead, each in its
    own style ("$50" -> "$149.00", "50.00 USD" -> "149.00 USD")."""
    def swap(match: re.Match[str]) -> str:
        group = next(g for g in ("a", "b", "c") if match.group(g))
        if _decimal(match.group(group)) != old or any(match.group(g) for g in ("s1", "s2", "s3", "s4")):
            return match.group(0)
        start, end = match.span(group)
        return match.group(0)[: start - match.start()] + new + match.group(0)[end - match.start():]

    return _money(ISO_CODES | {currency} - {""}).sub(swap, text)
