"""Checks on a draft's text that need no model: an ending cut off mid-sentence (a writer that
ran out of tokens, or stopped early), a support reply's contacts and amounts that its sources do
not give, sentences that play the customer's own words back, and whether a reply draws on its
article at all.

Small reviewing models miss it (the local 1.5B gave drafts cut off mid-sentence the
same 0.80 as their finished twins), and it is visible in the text itself, so a finding only
ever lowers a model's score (`capped`), never raises one, and its message is the feedback the
writer gets next. (Padding was tried too: no word-count measure told the padded drafts of the
benchmark pairs from long, good technical text, so it is left to the model.)
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher
from typing import Callable, Iterator, Sequence

from nodes.amounts import money_mentions, written_numbers

#: a score a draft with a finding can have at most: below the default publish threshold (0.8)
#: and below a middling model score, so the writer revises it and a clean draft wins the round
CAP = 0.4

#: words a finished English sentence or list item does not end on: articles, conjunctions,
#: prepositions that are not also particles ("sign in", "log on" end fine), auxiliaries and
#: modals ("... the message should"), possessives
_DANGLING = frozenset(
    "a an the and or but nor to of into onto with from than as if that which whose whom "
    "because although unless while whereas is are was were be been being will would shall "
    "should can could may might must your our their its my".split()
)
_WORD = re.compile(r"[a-z0-9']+")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s")
#: a paragraph of prose (at least this long, with a sentence ending inside it) ends with a
#: sentence's end, unlike a list item, a heading, a sign-off or a line of code
_PROSE_WORDS = 12
_SENTENCE_INSIDE = re.compile(r"[a-z][.!?] +[A-Z]")


def _last_block(text: str) -> tuple[str, bool]:
    """The draft's last paragraph or list item, on one line, and whether it is a list item."""
    paragraph = [line.strip() for line in re.split(r"\n\s*\n", text.strip())[-1].splitlines() if line.strip()]
    items = [i for i, line in enumerate(paragraph) if _LIST_ITEM.match(line)]
    if items:
        return " ".join(paragraph[items[-1]:]), True
    return " ".join(paragraph), False


def unfinished_ending(text: str) -> bool:
    """True when the draft stops mid-sentence: its last paragraph or list item ends on a comma,
    a colon, an opening bracket or a dash, or on a word no sentence ends with ("... or use
    the"), or it is a paragraph of prose with no sentence end at all. A short list item, a
    heading or a signature without a full stop ("Dana Ortiz, Account Manager") is finished."""
    block, listed = _last_block(text)
    last = block.rstrip("*_`\"' ")
    if not last or last.startswith(("#", "|", "```", ">")) or set(last) <= set("-=~"):
        return False
    if last[-1] in ",;:([{-–—/&":  # a colon announces what never came
        return True
    words = _WORD.findall(last.lower())
    if words and words[-1] in _DANGLING and last[-1].isalnum():
        return True
    prose = not listed and len(block.split()) >= _PROSE_WORDS and _SENTENCE_INSIDE.search(block) is not None
    return prose and last[-1].isalnum()  # a word, not a full stop, a bracket or an emoji


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_LAST_SENTENCE_END = re.compile(r"[.!?](?:\*\*|[\"')\]])*(?=\s|$)")


def whole_sentences(text: str) -> str:
    """The text up to its last finished sentence ("" if none): what a reply cut off mid-sentence
    can keep without anyone having to guess the rest."""
    ends = list(_LAST_SENTENCE_END.finditer(text))
    return text[: ends[-1].end()].rstrip() if ends else ""


#: what a support reply may only repeat, never supply (a reply never promises what no article
#: says): an email address, a link, a phone number; amounts of money are read by nodes/amounts.py
_CONTACT = re.compile(
    r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+|https?://[^\s)>\]]+|\bwww\.[^\s)>\]]+|\+?\d[\d ()-]{7,}\d",
    re.IGNORECASE,
)


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text).casefold()


class _Known:
    """What the sources give, read once per reply: their text and the numbers they write."""

    def __init__(self, sources: str) -> None:
        self.text = _squash(sources)
        self.numbers = {abs(n.value) for n in written_numbers(sources)}


def _unknown(sentence: str, known: _Known) -> list[str]:
    contacts = [(m.start(), m.group(0).rstrip(".,;:")) for m in _CONTACT.finditer(sentence)]
    contacts = [(at, c) for at, c in contacts if _squash(c) not in known.text]
    # an amount in any form ("$60", "60 USD", "60 dollars") is supported when its number is in a source
    amounts = [(sentence.find(m.text), m.text) for m in money_mentions(sentence) if abs(m.value) not in known.numbers]
    return [text for _, text in sorted(contacts + amounts)]


def unsupported(sentence: str, sources: str) -> list[str]:
    """The contacts and amounts in `sentence` that `sources` (the article and the customer's
    message) do not contain."""
    return _unknown(sentence, _Known(sources))


def without_unsupported(reply: str, sources: str) -> str:
    """The reply without the sentences that give a contact or an amount its sources do not: a
    small model invents a support address now and then ("support@acmecloudnotes.com"), and a
    reviewer skimming a long reply may not notice; "" when nothing else is left."""
    known = _Known(sources)  # once per reply, not per sentence
    return _without_sentences(reply, lambda sentence: bool(_unknown(sentence, known)))


def _sentences(text: str) -> Iterator[str]:
    for line in text.splitlines():
        yield from _SENTENCE_END.split(line)


def _without_sentences(reply: str, drop: Callable[[str], bool]) -> str:
    """The reply without the sentences `drop` picks, its lines and paragraphs kept."""
    lines = []
    for line in reply.splitlines():
        kept = [part for part in _SENTENCE_END.split(line) if not drop(part)]
        if kept or not line.strip():
            lines.append(" ".join(kept))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


#: labels of the reply prompt (graphs/support.py), which the 0.5B copies into a reply now and then
_PROMPT_LABELS = ("customer message:", "help article:")
#: the customer's voice: a sentence in the first person, or a question, is theirs, not the reply's
_CUSTOMERS_VOICE = re.compile(r"\b(i|i'm|i've|i'd|i'll|me|my|mine|we|we're|we've|our|ours|us)\b|\?\s*$")
#: words in a row a reply sentence must share with the message to count as copied from it
_COPIED_RUN = 5
#: a sentence this long or longer that is nothing but words of the message in a row is copied
_WHOLE_SENTENCE = 4


def _copied(sentence: str, message_words: list[str]) -> bool:
    lowered = sentence.strip().lower()
    if lowered.startswith(_PROMPT_LABELS):
        return True
    words = _WORD.findall(lowered)
    run = SequenceMatcher(None, words, message_words, autojunk=False).find_longest_match(0, len(words), 0, len(message_words))
    if run.size == len(words) >= _WHOLE_SENTENCE:  # a whole sentence of theirs ("Please fix this ASAP."), in any voice
        return True
    return run.size >= _COPIED_RUN and _CUSTOMERS_VOICE.search(lowered) is not None


def customers_words(sentence: str, message: str) -> bool:
    """A reply sentence that is the customer's own words played back in their voice ("I clicked
    it maybe 2 hours after I got the mail.", "Is there any cheaper option for students?") or
    carries the prompt's labels: it answers nothing and reads as if the customer wrote it."""
    return _copied(sentence, _WORD.findall(message.lower()))


def without_customers_words(reply: str, message: str) -> str:
    """The reply without sentences copied from the customer's message in their voice, or
    carrying the prompt's labels (`customers_words`); "" when nothing else is left."""
    message_words = _WORD.findall(message.lower())  # once per reply, not per sentence
    return _without_sentences(reply, lambda sentence: _copied(sentence, message_words))


#: a sentence this long or longer that is nothing but words of an instruction in a row repeats it
_WHOLE_INSTRUCTION = 3


def _label_of(sentence: str, labels: Sequence[str]) -> str | None:
    lowered = sentence.strip().lstrip("#>*-_ \"'").lower()
    return next((label for label in labels if lowered.startswith(label.lower())), None)


def _in_instructions(words: list[str], instructions: list[list[str]]) -> bool:
    for text in instructions:
        run = SequenceMatcher(None, words, text, autojunk=False).find_longest_match(0, len(words), 0, len(text))
        if run.size >= _COPIED_RUN or run.size == len(words) >= _WHOLE_INSTRUCTION:
            return True
    return False


def without_prompt_text(draft: str, *, labels: Sequence[str], instructions: Sequence[str] = (), notes: Sequence[str] = ()) -> str:
    """The draft without what a writer copied from its prompt instead of writing: sentences that
    start with one of the prompt's `labels` ("Customer message:", "Reviewer feedback:"), that
    repeat its fixed `instructions` (five words in a row, or a whole short sentence of them),
    or that are one of the reviewer's `notes` word for word. A draft that carries two of the
    labels anywhere is the prompt played back, not a draft: nothing of it is kept (""), so no
    prompt text ever reaches a gate as if a writer had written it."""
    lowered = draft.lower()
    if sum(label.lower() in lowered for label in labels) >= 2:  # wherever they stand, even run together on one line
        return ""
    told = [_WORD.findall(text.lower()) for text in instructions]
    noted = {tuple(_WORD.findall(note.lower())) for note in notes if note.strip()}

    def prompt_text(sentence: str) -> bool:
        words = _WORD.findall(sentence.lower())
        return bool(words) and (_label_of(sentence, labels) is not None or tuple(words) in noted or _in_instructions(words, told))

    return _without_sentences(draft, prompt_text)


#: words that say nothing about what a sentence is about: left out when comparing it with a text
_FILLER_WORDS = frozenset(
    "the a an and or but to of in on at for with is are was were be been it this that these those you your "
    "i i'm i've my me we our us they them their so do does did not don't can can't will would have has had "
    "if as from by just now get got what how why".split()
)
#: a reply draws on its article when one of its sentences has at least this many words about
#: something, and at least `_FROM_ARTICLE` of them occur in the article
_ABOUT_WORDS, _FROM_ARTICLE = 3, 0.5


def content_words(text: str) -> list[str]:
    """The text's words that say what it is about, lowercased, a plural's "s" dropped."""
    return [w.rstrip("s") for w in _WORD.findall(text.lower()) if w not in _FILLER_WORDS]


def draws_on(reply: str, article: str) -> bool:
    """Does any sentence of the reply take most of its words from the article? A reply that
    only acknowledges the message ("You clicked the reset link but it says expired. Now what?")
    answers nothing, however fluent."""
    known = set(content_words(article))
    for sentence in _sentences(reply):
        words = content_words(sentence)
        if len(words) >= _ABOUT_WORDS and sum(w in known for w in words) / len(words) >= _FROM_ARTICLE:
            return True
    return False


def findings(text: str, *, cut_off: bool = False) -> list[str]:
    """What is wrong with the draft's text, each as an instruction to the writer; `cut_off`: the
    server said the writer stopped at its token limit (finish_reason "length")."""
    found = []
    if cut_off or unfinished_ending(text):
        found.append("The draft stops mid-sentence: finish the last sentence and the section it belongs to.")
    return found


def capped(score: float, feedback: str, text: str, *, cut_off: bool = False) -> tuple[float, str]:
    """The reviewer's score and feedback, lowered to CAP with the findings' advice when the
    text has any; unchanged otherwise."""
    found = findings(text, cut_off=cut_off)
    if not found:
        return score, feedback
    return min(score, CAP), " ".join(found)
