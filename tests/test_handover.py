"""The hand-over playbook (nodes/handover.py): what the shipped topics catch, what they must
leave alone, and a bad playbook file refused with one line naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodes.handover import PlaybookError, load_playbook

#: One or more messages per shipped topic, in wording a customer might use.
MUST_HAND_OVER = {
    "account security": [
        "I think I've been hacked, there are notes in my account I never wrote",
        "somebody signed into my account last night from a device I don't own",
        "Got an alert about a suspicious login and now my 2FA phone number is different",
        "My email address was changed yesterday and I didn't do that",
        "a notebook called 'Budget 2025' appeared in my list, it's not mine",
        "I got a 'new login from Lagos' email. That wasn't me, I have never left Ireland",
        "An email from 'Acme Billing' asks me to confirm my card number by tomorrow. Is this really you?",
        "I clicked the link in a fake email that looked exactly like your sign-in page",
    ],
    "legal, police or press": [
        "Our attorneys will be in touch regarding your handling of my data.",
        "This is Officer Brandt, Hamburg police, we need account records for an investigation",
        "I'm a reporter at the Gazette; would your company like to comment on the outage?",
        "You will receive a subpoena for these records next week.",
        "I have complained to the CNIL; send me the contact of your DPO",
    ],
    "compensation or special terms": [
        "I lost a day of work because of your bug and expect to be compensated",
        "We need a custom quote for 900 seats and net-60 payment terms",
        "Our compliance officer needs you to sign a data processing agreement first",
        "Can our school get a 40% discount for the whole district?",
    ],
    "unrecognised charge": [
        "Who charged me $12? I don't recognise this payment at all",
        "There is a payment to you on my card but I never signed up for anything",
        "I'm disputing this with my bank, it looks like fraud",
        "We are billed for 20 seats but nobody on our side added seats",
        "You charged us for 50 users, nobody here added 40 users",
        "I never selected euros, why was my renewal charged in euros?",
    ],
    "outage or unknown error": [
        "Is the service down? Nothing has synced for hours",
        "Every request returns error 502 Bad Gateway",
        "Your latest update deleted half of my notebooks",
        "Norton says your installer contains a virus",
        "since this morning every note opens as gibberish",
        "My attachments are corrupted after the sync, PDFs won't open",
        "After yesterday's Android update every note in my Work notebook opens blank",
        "Half of my notes are gone and I did not delete them",
        "Sync fails with ERR_NODE_42 on my laptop and my phone",
        "The API has returned 502 to every call since noon",
        "Bug report: pasting a list duplicates every line",
        "My exported backup has every image at 0 bytes",
    ],
    "account suspended": [
        "Why was my account suspended? I need my notes for an exam tomorrow",
        "you banned our workspace without any warning",
        "I got an email saying I violated the terms of service, what did I do?",
    ],
    "bereavement": [
        "My husband passed away in June and his recipes are in his account",
        "I'm the executor of my aunt's estate and need her notes",
        "my dad died last month, can I get into his notes?",
    ],
    "staff decision": [
        "I know it is past your 14-day window, but could you make an exception for me?",
        "Can a manager approve a partial credit, given the circumstances?",
        "Please merge my two accounts into one",
        "I understand the refund window is 14 days, but I was abroad the whole month",
        "Our admin left the company and won't answer, who can give us control of the team?",
        "This is the third time I'm writing about the same problem",
        "Nobody has answered my emails for two weeks",
    ],
    "threat or abuse": [
        "You will regret this. I know where you live.",
        "You people are thieves and I'm coming to your office tomorrow",
    ],
    "accessibility": [
        "The note list doesn't work with my screen reader any more",
        "VoiceOver reads nothing in the editor",
    ],
}

#: Answerable questions that share words with the topics: none may be handed over by rule.
MUST_NOT_MATCH = [
    "I was charged twice this month",
    "My phone battery died and now I can't get my 2FA codes",
    "I lost my phone, how do I sign in without my authenticator?",
    "How do I press the sync button on Android?",
    "Where can I download last year's invoices?",
    "I accidentally deleted a note, can I restore it?",
    "The app slows down when a note has many images",
    "How do I change my account email address?",
    "Do you offer a student discount?",
    "How long does a refund take to reach my card?",
    "Can I export my notes before I delete my account?",
    "Is my data encrypted at rest?",
    "The iPhone app crashes when I open a big note",
    "My card was declined when the subscription renewed",
    "Please refund order 1007, I never used it",
    # the refund path's own words (nodes/refunds.py REFUND_WORDS): its approval chain decides those
    "Can you reimburse me for order 1042? It arrived broken",
    "I want a chargeback for order 1042",
    "Please repay the 20 dollars for order 1042",
    "My account is temporarily locked after too many tries",
    "How do I sign in on a new laptop? I didn't set up 2FA",
    # words the hand-over kinds (staff decision, threat, accessibility, ...) share with everyday questions
    "Is my data accessible offline?",
    "Where do I enter the CVV when I change my card?",
    "Can I combine the student discount with another offer?",
    "My laptop was stolen by thieves, how do I sign it out of my account?",
    "After the update, where did the export button go?",
    "I never received the password reset email",
    "The API throws an exception when I send too many requests",
    "Is the email you sent about my receipt the only copy I get?",
    "I got 500 notes in my account, is there a limit?",
    "Where can I read the terms of service agreement?",
    "I am the only admin of our team, how do I invite people?",
    "Are you SOC 2 audited?",
]

RATE_LIMIT_ARTICLE = (Path(__file__).parents[1] / "nodes" / "data" / "kb" / "technical-api-rate-limits.md").read_text()


@pytest.mark.parametrize("message", ["The Android app shows 'Error E-4012' and a white screen", "sync stops with error code 0x7f3a",
                                     "I get error #20417 when I open a notebook"])
def test_an_error_no_retrieved_article_names_is_handed_over(message):
    matched = load_playbook().match(message, [RATE_LIMIT_ARTICLE])
    assert matched is not None and matched.name == "outage or unknown error"


def test_an_error_a_retrieved_article_explains_is_left_to_the_agent():
    assert load_playbook().match("Our script keeps getting error 429 from the API", [RATE_LIMIT_ARTICLE]) is None
    assert load_playbook().match("Our script keeps getting error 429 from the API", []) is not None, "no article: nobody explains it"


def test_a_number_after_error_that_is_not_a_code_is_not_one():
    assert load_playbook().match("My export fails with error 7 times out of 10", []) is None


@pytest.mark.parametrize("topic,message", [(t, m) for t, ms in MUST_HAND_OVER.items() for m in ms])
def test_the_shipped_playbook_hands_over_each_topic(topic, message):
    matched = load_playbook().match(message)
    assert matched is not None and matched.name == topic


@pytest.mark.parametrize("message", MUST_NOT_MATCH)
def test_the_shipped_playbook_leaves_answerable_questions_to_the_agent(message):
    assert load_playbook().match(message) is None


def test_the_shipped_topics_are_described_for_the_agent():
    playbook = load_playbook()
    assert set(playbook.names()) == set(MUST_HAND_OVER)
    assert all(t.describe and t.patterns for t in playbook.topics)


def test_an_edited_playbook_is_read_again(tmp_path):
    path = tmp_path / "handover.toml"
    path.write_text('[[topic]]\nname = "boats"\ndescribe = "Boats"\nmatch = ["\\\\bboat"]\n')
    assert load_playbook(path).match("my boat sank").name == "boats"
    path.write_text('[[topic]]\nname = "cars"\ndescribe = "Cars"\nmatch = ["\\\\bcar"]\n')
    assert load_playbook(path).match("my boat sank") is None


@pytest.mark.parametrize("text,says", [
    ("not toml [", "not a readable TOML file"),
    ("title = 'x'\n", "no [[topic]] tables"),
    ('[[topic]]\ndescribe = "x"\n', "`name` must be a short text"),
    ('[[topic]]\nname = "a"\n', "`describe` must be a text"),
    ('[[topic]]\nname = "a"\ndescribe = "x"\nmatch = "police"\n', "`match` must be a list"),
    ('[[topic]]\nname = "a"\ndescribe = "x"\nmatch = ["(police"]\n', "bad regular expression '(police'"),
    ('[[topic]]\nname = "a"\ndescribe = "x"\nunless_an_article_names = "E-1"\n', "`unless_an_article_names` must be a list"),
    ('[[topic]]\nname = "a"\ndescribe = "x"\nunless_an_article_names = ["(E"]\n', "bad regular expression '(E'"),
    ('[[topic]]\nname = "a"\ndescribe = "x"\n[[topic]]\nname = "a"\ndescribe = "y"\n', "used twice"),
])
def test_a_bad_playbook_is_refused_naming_the_file_and_what_to_fix(tmp_path, text, says):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(PlaybookError, match="hand-over playbook") as raised:
        load_playbook(path)
    assert says in str(raised.value) and str(path) in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_missing_playbook_says_which_variable_to_fix(tmp_path):
    with pytest.raises(PlaybookError, match="SIGNOFF_HANDOVER_PLAYBOOK"):
        load_playbook(Path(tmp_path / "absent.toml"))


def test_signoff_config_says_whether_the_playbook_can_be_used(tmp_path):
    import json

    from typer.testing import CliRunner

    from cli import app

    def note(**env: str) -> str:
        result = CliRunner().invoke(app, ["config", "--json"], env={"SIGNOFF_HOME": str(tmp_path), **env})
        assert result.exit_code == 0, result.output
        return {s["variable"]: s["note"] for s in json.loads(result.output)["settings"]}["SIGNOFF_HANDOVER_PLAYBOOK"]

    bad = tmp_path / "bad.toml"
    bad.write_text('[[topic]]\nname = "a"\ndescribe = "x"\nmatch = ["(police"]\n')
    assert note(SIGNOFF_HANDOVER_PLAYBOOK="").endswith(f"{len(load_playbook().topics)} topics, {load_playbook().pattern_count()} patterns")
    assert "CANNOT BE USED" in note(SIGNOFF_HANDOVER_PLAYBOOK=str(bad)) and "bad regular expression" in note(SIGNOFF_HANDOVER_PLAYBOOK=str(bad))
