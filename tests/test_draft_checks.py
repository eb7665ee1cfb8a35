"""Text checks on a draft (nodes/draft_checks.py): they catch an ending cut off mid-sentence
and leave every finished ending alone, because a false finding would hold a good draft back."""

from __future__ import annotations

import pytest

from nodes.draft_checks import (CAP, capped, customers_words, draws_on, findings, unfinished_ending, unsupported, whole_sentences,
                                 without_customers_words, without_prompt_text, without_unsupported)

FINISHED = [
    "# Notes\n\nWe ship on Friday.",
    "Ask in #facilities?",
    "Steps:\n\n1. Open the app\n2. Sign in",
    "- Log on",
    "Best regards,\nDana Ortiz, Account Manager",
    "Use it whenever you can.",
    "# A heading only",
    "Text above.\n\n---",
    "| a | b |\n|---|---|\n| 1 | 2 |",
    "**Done.**",
    "",
    "Uploads are faster now. We hope you enjoy the new uploader as much as we do 🚀",
    "Steps:\n\n- Open Settings and choose Export to download every note you have as one zip file",
    "Run it:\n\n```\nsignoff worker --concurrency 20\n```",
]

CUT_OFF = [
    "3. **Fill in a near-miss card** (there's a box by every time clock) or use the",
    "- **Explain why, not what.** The diff already shows what changed; the message should\n",
    "We refund within 14 days,",
    "Contact the team (",
    "# Export\n\nTo export your notes, do the following:",
    "Rotate the key and",
    "The limits depend on your",
    "Instead, the payment is first recorded as a liability. Each month a twelfth of it moves to reven",
]


@pytest.mark.parametrize("text", FINISHED)
def test_a_finished_ending_is_not_flagged(text):
    assert not unfinished_ending(text)
    assert findings(text) == []


@pytest.mark.parametrize("text", CUT_OFF)
def test_an_ending_cut_off_mid_sentence_is_flagged(text):
    assert unfinished_ending(text)


def test_a_finding_caps_a_high_score_and_becomes_the_feedback():
    score, feedback = capped(0.9, "Add an example.", "# Keys\n\nRotate them every 90 days and")
    assert score == CAP
    assert feedback.startswith("The draft stops mid-sentence")


def test_a_finding_never_raises_a_low_score():
    assert capped(0.2, "Off topic.", "Rotate them and")[0] == 0.2


def test_a_clean_draft_keeps_the_reviewers_score_and_feedback():
    assert capped(0.9, "Add an example.", "# Keys\n\nRotate them every 90 days.") == (0.9, "Add an example.")


def test_whole_sentences_drops_the_unfinished_tail_and_keeps_every_finished_sentence():
    text = "Open **Settings > Billing**. Click **Cancel**.\n\nAfter that, your data is erased within"
    assert whole_sentences(text) == "Open **Settings > Billing**. Click **Cancel**."
    assert whole_sentences('He said "done." Then the') == 'He said "done."'
    assert whole_sentences("No sentence ends here") == ""


ARTICLE = "Plus costs $8/month. Write to billing@acme.example or see https://acme.example/billing."


def test_a_contact_or_amount_the_sources_give_is_supported():
    assert unsupported("Write to billing@acme.example; Plus is $8 a month.", ARTICLE) == []


def test_a_contact_or_amount_no_source_gives_is_found():
    assert unsupported("Email support@acmecloudnotes.com or call +1 415 555 0100.", ARTICLE) == ["support@acmecloudnotes.com", "+1 415 555 0100"]
    assert unsupported("We will refund $60 today.", ARTICLE) == ["$60"]


def test_an_amount_written_in_words_or_codes_is_checked_like_one_with_a_symbol():
    assert unsupported("We have refunded 60.00 USD, that is 60 dollars.", ARTICLE) == ["60.00 USD", "60 dollars"]
    assert unsupported("Plus is 8 USD a month.", ARTICLE) == []


def test_a_sentence_with_an_invented_contact_is_dropped_and_the_rest_kept():
    reply = "Plus costs $8 a month. For help, write to help@acme-support.example.\n\n- Open Settings."
    assert without_unsupported(reply, ARTICLE) == "Plus costs $8 a month.\n\n- Open Settings."


MESSAGE = "the password reset link says it's expired. i clicked it maybe 2 hours after i got the mail. what now?"
RESET_ARTICLE = "How do I reset my password?\nOpen the email and click the link. The link is valid for 1 hour and can be used once."


@pytest.mark.parametrize("sentence", [
    "I clicked it maybe 2 hours after I got the mail.",  # the customer's sentence, in their voice
    "Is there any cheaper option for students?",  # their question, from another message
    "Customer message: the password reset link says it's expired.",  # the prompt's label
    "We are small design studio in Munich.",
])
def test_the_customers_own_words_in_their_voice_are_found(sentence):
    message = MESSAGE + " Is there any cheaper option for students? We are small design studio in Munich."
    assert customers_words(sentence, message)


@pytest.mark.parametrize("sentence", [
    "The link is valid for 1 hour, so request a new one.",  # an answer, not a copy
    "You clicked the link after it expired.",  # the customer's facts in the reply's voice
    "I am sorry the link expired before you could use it.",  # first person, but not copied
])
def test_a_reply_sentence_that_only_shares_words_is_kept(sentence):
    assert not customers_words(sentence, MESSAGE)


def test_copied_sentences_are_dropped_and_the_answer_kept():
    reply = "I clicked it maybe 2 hours after I got the mail. The link is valid for 1 hour.\n\nRequest a new link."
    assert without_customers_words(reply, MESSAGE) == "The link is valid for 1 hour.\n\nRequest a new link."


def test_a_reply_that_takes_a_sentence_from_its_article_draws_on_it():
    assert draws_on("Sorry about that. The link is valid for one hour and can be used once.", RESET_ARTICLE)


def test_a_reply_that_only_acknowledges_the_message_does_not_draw_on_its_article():
    assert not draws_on("You clicked the reset link this morning but it says expired. Now what?", RESET_ARTICLE)
    assert not draws_on("", RESET_ARTICLE)


LABELS = ("Customer message:", "Reviewer feedback:")
RULES = "Speak to the customer as \"you\". Use two to four sentences. No greeting placeholders, no signature."


@pytest.mark.parametrize("draft, kept", [
    ("Customer message: my link expired. The link is valid for 1 hour.", "The link is valid for 1 hour."),
    ("**Reviewer feedback:** be brief\n\nRequest a new link.", "Request a new link."),
    ("Request a new link. Speak to the customer as \"you\".", "Request a new link."),
    ("Request a new link. No greeting placeholders, no signature.", "Request a new link."),
    ("Be brief.\n\nRequest a new link.", "Request a new link."),  # the reviewer's note, word for word
    ("Customer message: my link expired.\n\nReviewer feedback: be brief\n\nRequest a new link.", ""),  # the prompt played back
    ("Request a new link (customer message: my link expired; reviewer feedback: be brief)", ""),  # run together
])
def test_prompt_text_is_dropped_and_a_played_back_prompt_leaves_nothing(draft, kept):
    assert without_prompt_text(draft, labels=LABELS, instructions=[RULES], notes=["be brief"]) == kept


@pytest.mark.parametrize("draft", [
    "Use the link in the email within an hour.",  # shares words with the rules, but is an answer
    "Be brief when you write to billing, and say which invoice.",  # contains the note, is more
    "You can write to us as often as you like.",
])
def test_a_reply_that_only_shares_words_with_the_prompt_is_kept(draft):
    assert without_prompt_text(draft, labels=LABELS, instructions=[RULES], notes=["be brief"]) == draft


def test_a_whole_sentence_of_the_customers_is_copied_in_any_voice():
    assert customers_words("Please fix this ASAP.", "I was charged twice. Please fix this ASAP.")
    assert not customers_words("We will fix this.", "I was charged twice. Please fix this ASAP.")
