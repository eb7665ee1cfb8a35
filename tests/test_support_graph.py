"""The support escalation graph, every path, on scripted models and a real database."""

from __future__ import annotations

import dataclasses

import pytest

from graphs.registry import SUPPORT
from runtime.thread_runner import AwaitingDecision, ThreadRunner
from graphs.support import HOLDING_REPLY, QUOTED_WARNING, REDRAFT_TASK, REPLY_RULES, build_graph, redraft_prompt
from nodes.gates import GateError, content_digest
from nodes.handover import load_playbook
from tests.conftest import count_rows
from tests.scripted import ANSWERED, CLASSIFY, REDRAFT, REPLY, agent, scripted_registry, support_rules

BILLING = [
    *support_rules("billing", "A duplicate charge is usually a pending authorization that drops off in 3-5 business days."),
    (REDRAFT, "Sorry for the trouble: the second charge is a pending authorization."),
]
TECHNICAL = [*support_rules("technical"), (REDRAFT, ["Redraft one", "Redraft two", "Redraft three"])]


@pytest.fixture
def run(pool, make_context):
    def runner(rules, **ctx) -> tuple[ThreadRunner, list[dict]]:
        events: list[dict] = []
        return ThreadRunner(pool, SUPPORT, make_context(scripted_registry(rules), **ctx)), events

    return runner


def test_billing_question_is_resolved_from_the_kb_and_waits_for_review(run, pool):
    runner, events = run(BILLING)
    stop = runner.start("t-billing", "I was charged twice this month", {"email": "a@example.com"}, events.append)
    assert (stop.status, stop.gate) == ("waiting", "review")
    assert stop.values["intent"] == "billing"
    assert "pending authorization" in stop.values["draft"]
    assert stop.values["article"] == stop.values["sources"][0], "the agent chose the first article found"
    prompts = runner.context.models.primary.chat.prompts
    reply_prompt = next(p for p in prompts if REPLY in p)
    assert "Why was I charged twice?" in reply_prompt, "the reply is drawn from the chosen article"
    assert count_rows(pool, "tickets") == 0
    assert count_rows(pool, "outbox") == 0


def test_approving_a_resolved_reply_sends_it_once(run, pool):
    runner, events = run(BILLING)
    runner.start("t1", "I was charged twice this month", {"email": "a@example.com"}, events.append)
    runner.decide("t1", "approved", actor="alice")
    stop = runner.resume("t1", events.append)
    assert stop.status == "finished"
    assert stop.values["outcome"] == "replied"
    assert count_rows(pool, "outbox", thread_id="t1", kind="reply") == 1
    assert count_rows(pool, "approvals", thread_id="t1", decision="approved", actor="alice") == 1


def test_technical_question_is_escalated_with_a_ticket_then_approved(run, pool):
    runner, events = run(TECHNICAL)
    stop = runner.start("t2", "The app crashes with error 0x99 on my fridge", {}, events.append)
    assert (stop.status, stop.gate) == ("waiting", "review")
    assert stop.values["ticket_id"] is not None
    runner.decide("t2", "approved", actor="bob")
    stop = runner.resume("t2", events.append)
    assert stop.values["outcome"] == "replied"
    assert count_rows(pool, "tickets", thread_id="t2") == 1
    assert count_rows(pool, "outbox", thread_id="t2") == 1


def test_rejection_with_feedback_redrafts_and_returns_to_the_gate(run, pool):
    runner, events = run(BILLING)
    runner.start("t3", "I was charged twice this month", {}, events.append)
    runner.decide("t3", "rejected", actor="carol", note="apologise first")
    stop = runner.resume("t3", events.append)
    assert (stop.status, stop.gate) == ("waiting", "review")
    assert stop.values["draft"].startswith("Sorry for the trouble")
    assert stop.values["redrafts"] == 1
    prompts = runner.context.models.primary.chat.prompts
    assert any("apologise first" in p for p in prompts), "the reviewer's feedback reaches the model"
    runner.decide("t3", "approved", actor="carol")
    stop = runner.resume("t3", events.append)
    assert stop.values["outcome"] == "replied"
    assert count_rows(pool, "outbox", thread_id="t3", kind="reply") == 1


FIRST_REPLY = "A duplicate charge is usually a pending authorization that drops off in 3-5 business days."
URGENT = "I was charged twice this month. Please fix this ASAP."
FEEDBACK = "apologise; don't say contact Support"


def redrafted(runner, tid: str, answer) -> dict:
    """Reject the waiting reply with FEEDBACK; the redraft answers `answer` (a function of the
    prompt the redraft is given, or a text); the thread's values back at the gate."""
    values = runner.snapshot(tid).values
    if callable(answer):
        answer = answer(redraft_prompt({**values, "last_decision": {"note": FEEDBACK}})[1].content)
    runner.context.models.primary.chat.rules.insert(0, (REDRAFT, answer))
    runner.decide(tid, "rejected", actor="carol", note=FEEDBACK)
    stop = runner.resume(tid, lambda event: None)
    assert (stop.status, stop.gate) == ("waiting", "review")
    return stop.values


@pytest.mark.parametrize("answer", [
    lambda prompt: prompt,  # the prompt played back whole, labels and all
    lambda prompt: f"Please fix this ASAP. {REDRAFT_TASK} {REPLY_RULES}",  # its instructions and the customer's words, no label
    lambda prompt: prompt.replace("\n\n", " "),  # the same, on one line
])
def test_a_redraft_that_plays_the_prompt_back_never_reaches_the_gate(run, answer):
    runner, events = run(support_rules("billing", FIRST_REPLY))
    runner.start("t-echo", URGENT, {}, events.append)
    values = redrafted(runner, "t-echo", answer)
    content = SUPPORT.review_content(values)
    for prompt_text in ("Rewrite the support reply", "Reviewer feedback", "Speak to the customer", "Please fix this ASAP", FEEDBACK, "Customer message"):
        assert prompt_text not in values["draft"], prompt_text
    assert values["draft"] == FIRST_REPLY
    assert content.startswith("check: the redraft was the prompt played back or had no sentence its sources support, so the rejected reply is offered again")


def test_a_redraft_identical_to_a_rejected_reply_is_flagged_not_offered_as_new(run):
    runner, events = run(support_rules("billing", FIRST_REPLY))
    first = runner.start("t-same", URGENT, {}, events.append)
    values = redrafted(runner, "t-same", FIRST_REPLY)
    content = SUPPORT.review_content(values)
    assert values["draft"] == FIRST_REPLY and content.startswith("check: the redraft is a reply you already rejected, word for word")
    assert content_digest(content) != content_digest(SUPPORT.review_content(first.values)), "the reviewer sees it is not new"
    values = redrafted(runner, "t-same", "Sorry for the trouble: the second charge is a pending authorization.")
    assert "check:" not in SUPPORT.review_content(values), "a new reply is offered as new"


def test_a_reply_rejected_two_redrafts_ago_is_flagged_when_it_comes_back(pool, make_context):
    models = scripted_registry([*support_rules("billing", FIRST_REPLY), (REDRAFT, ["Sorry: the second charge is a pending authorization.", FIRST_REPLY])])
    runner = ThreadRunner(pool, SUPPORT, make_context(models, max_redrafts=3))
    runner.start("t-back", URGENT, {}, lambda event: None)
    for _ in range(2):
        runner.decide("t-back", "rejected", actor="carol", note="no")
        stop = runner.resume("t-back", lambda event: None)
    assert stop.values["draft"] == FIRST_REPLY
    assert SUPPORT.review_content(stop.values).startswith("check: the redraft is a reply you already rejected")


def test_a_failed_redraft_keeps_the_rejected_reply_and_says_so(run):
    runner, events = run(support_rules("billing", FIRST_REPLY))
    runner.start("t-fail", URGENT, {}, events.append)
    values = redrafted(runner, "t-fail", RuntimeError("model down"))
    assert values["draft"] == FIRST_REPLY
    assert SUPPORT.review_content(values).startswith("check: the redraft failed (RuntimeError: model down), so the rejected reply is offered again")


def test_rejected_past_the_bound_sends_a_holding_reply_and_keeps_the_ticket_open(run, pool):
    runner, events = run(TECHNICAL)
    runner.start("t4", "The sync engine corrupts my notes", {}, events.append)
    for _ in range(3):  # the default bound allows two redrafts; the third rejection ends it
        runner.decide("t4", "rejected", actor="dan", note="not good enough")
        stop = runner.resume("t4", events.append)
    assert stop.status == "finished"
    assert stop.values["outcome"] == "holding"
    assert stop.values["reply"] == HOLDING_REPLY
    assert count_rows(pool, "tickets", thread_id="t4", status="open") == 1
    assert count_rows(pool, "outbox", thread_id="t4", kind="holding") == 1
    assert count_rows(pool, "approvals", thread_id="t4", decision="rejected") == 3


def test_a_reviewer_hands_a_drafted_reply_to_a_specialist_without_a_redraft(run, pool):
    runner, events = run(BILLING)
    runner.start("t-hand", "I was charged twice this month", {"email": "a@example.com"}, events.append)
    calls_before = len(runner.context.models.primary.chat.prompts)
    runner.decide("t-hand", "rejected", actor="erin", note="they mean a refund dispute", handover=True)
    stop = runner.resume("t-hand", events.append)
    assert stop.status == "finished"
    assert (stop.values["outcome"], stop.values["reply"]) == ("holding", HOLDING_REPLY)
    assert len(runner.context.models.primary.chat.prompts) == calls_before, "no model redrafts it"
    assert count_rows(pool, "tickets", thread_id="t-hand", status="open") == 1
    assert count_rows(pool, "outbox", thread_id="t-hand", kind="holding") == 1
    assert count_rows(pool, "approvals", thread_id="t-hand", decision="rejected", handover=True,
                      note="handed over to a specialist: they mean a refund dispute") == 1
    assert count_rows(pool, "audit_events", thread_id="t-hand", kind="ticket_opened") == 1
    with pool.connection() as conn:
        detail = conn.execute("SELECT detail FROM audit_events WHERE thread_id = 't-hand' AND kind = 'ticket_opened'").fetchone()["detail"]
    assert detail["handover"] == "reviewer", "the audit says who sent it to a specialist"


def test_a_hand_over_whose_process_died_before_writing_it_is_still_a_hand_over(run, pool):
    runner, events = run(BILLING)
    runner.start("t-hand2", "I was charged twice this month", {}, events.append)
    snapshot = runner.snapshot("t-hand2")
    from checkpoint.decisions import record_decision

    # What `decide` records before it writes the decision into the thread: the process dies here.
    record_decision(pool, thread_id="t-hand2", gate="review", checkpoint_id=snapshot.config["configurable"]["checkpoint_id"],
                    verdict="rejected", actor="erin", note="handed over to a specialist", digest="", handover=True)
    stop = runner.resume("t-hand2", events.append)
    assert (stop.status, stop.values["outcome"]) == ("finished", "holding")
    assert stop.values.get("redrafts", 0) == 0


def test_an_option_number_out_of_range_escalates(run, pool):
    runner, events = run([support_rules("billing")[0], ("billing support agent", '{"option": 99}')])
    stop = runner.start("t8", "I was charged twice this month", {}, events.append)
    assert (stop.status, stop.gate) == ("waiting", "review")
    assert stop.values["article"] is None
    assert count_rows(pool, "tickets", thread_id="t8") == 1


def test_a_hand_over_topic_chosen_by_the_agent_escalates_and_is_recorded(run, pool):
    # Nothing in the knowledge base matches, so the options are the hand-over topics alone: 2 is the second.
    runner, events = run([support_rules("general")[0], ("general support agent", '{"option": 2}')])
    stop = runner.start("t10", "Qwxyzzy plonkfrob", {}, events.append)
    assert stop.values["sources"] == []
    assert stop.values["handover"] == load_playbook().names()[1]
    assert stop.values["article"] is None and stop.values["ticket_id"] is not None
    agent_prompt = next(p for p in runner.context.models.primary.chat.prompts if "general support agent" in p)
    assert "Option 2: Hand over to a specialist. Legal, police or press" in agent_prompt
    assert f"ticket #{stop.values['ticket_id']} (legal, police or press)" in SUPPORT.summarize(stop.values), "pending shows why"


def test_an_error_code_the_retrieved_articles_explain_goes_to_the_agent_and_one_they_do_not_is_handed_over(run):
    runner, events = run(support_rules("technical", "Wait for the number of seconds in Retry-After."))
    explained = runner.start("t-429", "Our API script gets error 429 Too Many Requests every few minutes", {}, events.append)
    assert explained.values["sources"][0] == "technical-api-rate-limits"
    assert explained.values.get("handover") is None and explained.values["article"] == "technical-api-rate-limits"

    unknown = runner.start("t-e4012", "The API script stops with error E-4012 every few minutes", {}, events.append)
    assert unknown.values["handover"] == "outage or unknown error", "no retrieved article names E-4012"
    assert unknown.values["ticket_id"] is not None


def test_a_message_the_playbook_matches_is_handed_over_without_asking_the_agent(run, pool):
    # The scripted agent would answer from the first article: the playbook decides first.
    runner, events = run(BILLING)
    stop = runner.start("t12", "My lawyer says I was charged twice this month and wants it back", {}, events.append)
    assert (stop.status, stop.gate) == ("waiting", "review")
    assert stop.values["handover"] == "legal, police or press"
    assert stop.values["ticket_id"] is not None and stop.values.get("article") is None
    assert not any("support agent" in p for p in runner.context.models.primary.chat.prompts), "no agent call"
    assert stop.values["intent"] == "billing", "the ticket still goes to the team the message is for"
    with pool.connection() as conn:
        detail = conn.execute("SELECT detail FROM audit_events WHERE thread_id = 't12' AND kind = 'ticket_opened'").fetchone()["detail"]
    assert detail["handover"] == "legal, police or press", "the audit says why a person got it"


def test_the_agent_is_offered_the_topics_of_the_playbook_in_force(run, pool, tmp_path):
    playbook = tmp_path / "handover.toml"
    playbook.write_text('[[topic]]\nname = "harbour"\ndescribe = "Anything about boats"\nmatch = []\n')
    runner, events = run([support_rules("general")[0], ("general support agent", '{"option": 1}')], playbook=load_playbook(playbook))
    stop = runner.start("t13", "Qwxyzzy plonkfrob", {}, events.append)
    assert stop.values["handover"] == "harbour"
    agent_prompt = next(p for p in runner.context.models.primary.chat.prompts if "general support agent" in p)
    assert "Option 1: Hand over to a specialist. Anything about boats" in agent_prompt
    assert "Legal, police" not in agent_prompt


def test_the_agent_decides_on_the_review_model_when_one_is_configured(run, pool):
    deciding = scripted_registry([("billing support agent", '{"option": 1}')])
    runner, events = run([support_rules("billing")[0], (REPLY, "Pending authorizations drop off within 3-5 business days.")], review_models=deciding)
    stop = runner.start("t11", "I was charged twice this month", {}, events.append)
    assert stop.values["article"] == stop.values["sources"][0] and stop.values["draft"] == "Pending authorizations drop off within 3-5 business days."
    assert any("billing support agent" in p for p in deciding.primary.chat.prompts)
    assert not any("billing support agent" in p for p in runner.context.models.primary.chat.prompts)


def non_judging(rules):
    """A registry whose model is marked as the local 0.5B is: one that may not judge (ModelHandle.judges)."""
    registry = scripted_registry(rules)
    return dataclasses.replace(registry, primary=dataclasses.replace(registry.primary, judges=False))


def test_a_model_that_may_not_judge_is_not_asked_and_the_best_ranked_article_answers(pool, make_context):
    # The scripted agent would hand over (option 9): it must never be asked.
    models = non_judging([support_rules("billing")[0], ("billing support agent", '{"option": 9}'), (REPLY, "Pending authorizations drop off within 3-5 business days.")])
    events: list[dict] = []
    stop = ThreadRunner(pool, SUPPORT, make_context(models)).start("t14", "I was charged twice this month", {}, events.append)
    assert not any("billing support agent" in p for p in models.primary.chat.prompts), "no agent call"
    assert (stop.status, stop.gate) == ("waiting", "review")
    assert stop.values["article"] == stop.values["sources"][0] == "billing-double-charge"
    assert stop.values["draft"] == "Pending authorizations drop off within 3-5 business days." and stop.values.get("handover") is None
    assert "billing_agent" in [e["node"] for e in events if e["event"] == "node_end"]


def test_with_no_model_that_may_judge_a_message_no_article_matches_is_handed_over(pool, make_context):
    models = non_judging([support_rules("general")[0]])
    stop = ThreadRunner(pool, SUPPORT, make_context(models)).start("t15", "Qwxyzzy plonkfrob", {}, lambda e: None)
    assert stop.values["sources"] == [] and stop.values["ticket_id"] is not None
    assert not any("general support agent" in p for p in models.primary.chat.prompts)


def test_a_review_model_that_judges_decides_for_a_primary_that_may_not(pool, make_context):
    deciding = scripted_registry([("billing support agent", '{"option": 2}')])
    models = non_judging([support_rules("billing")[0], (REPLY, "Pending authorizations drop off within 3-5 business days.")])
    stop = ThreadRunner(pool, SUPPORT, make_context(models, review_models=deciding)).start("t16", "I was charged twice this month", {}, lambda e: None)
    assert stop.values["article"] == stop.values["sources"][1], "the review model's choice, not the best-ranked"


def test_a_failed_reply_escalates_instead_of_leaving_an_empty_draft(run, pool):
    runner, events = run([*support_rules("billing")[:1], ("billing support agent", '{"option": 1}'), (REPLY, RuntimeError("reply model down"))])
    stop = runner.start("t9", "I was charged twice this month", {}, events.append)
    assert (stop.status, stop.gate) == ("waiting", "review")
    assert "reply model down" in stop.values["error"]
    assert stop.values["ticket_id"] is not None and f"#{stop.values['ticket_id']}" in stop.values["draft"]


def test_a_reply_cut_off_mid_sentence_reaches_the_gate_as_its_whole_sentences(run):
    cut = "Compare the charges in Settings > Billing > Invoices. A confirmed duplicate charge is refunded in full within"
    runner, events = run([*support_rules("billing")[:1], ("billing support agent", '{"option": 1}'), (REPLY, cut)])
    stop = runner.start("t-cut", "I was charged twice this month", {}, events.append)
    assert (stop.status, stop.gate, stop.values.get("ticket_id")) == ("waiting", "review", None)
    assert stop.values["draft"] == "Compare the charges in Settings > Billing > Invoices."


def test_a_reply_with_no_finished_sentence_quotes_its_article_with_a_warning(run):
    runner, events = run([*support_rules("billing")[:1], ("billing support agent", '{"option": 1}'), (REPLY, "You should check the")])
    stop = runner.start("t-cut2", "I was charged twice this month", {}, events.append)
    assert (stop.status, stop.gate, stop.values.get("ticket_id")) == ("waiting", "review", None)
    assert stop.values["draft"].startswith('Thank you for your message. Our help article "Why was I charged twice?" covers this:')
    assert "pending authorization" in stop.values["draft"]
    assert any(QUOTED_WARNING in (e.get("update") or {}).get("warnings", []) for e in events if e["event"] == "node_end")


def test_a_reply_that_only_plays_the_message_back_quotes_its_article(run):
    echo = "You were charged twice this month. I was charged twice this month."
    runner, events = run([*support_rules("billing")[:1], ("billing support agent", '{"option": 1}'), (REPLY, echo)])
    stop = runner.start("t-echo", "I was charged twice this month", {}, events.append)
    assert stop.values["draft"].startswith('Thank you for your message. Our help article "Why was I charged twice?"')


def test_the_customers_words_copied_into_a_reply_never_reach_the_gate(run):
    reply = "I was charged twice this month. The second charge is usually a pending authorization."
    runner, events = run([*support_rules("billing")[:1], ("billing support agent", '{"option": 1}'), (REPLY, reply)])
    stop = runner.start("t-copy", "I was charged twice this month", {}, events.append)
    assert stop.values["draft"] == "The second charge is usually a pending authorization."


def test_a_reply_sentence_with_a_contact_the_article_does_not_give_never_reaches_the_gate(run):
    reply = "Compare the charges in Settings > Billing > Invoices. Or email refunds@acme-help.example today."
    runner, events = run([*support_rules("billing")[:1], ("billing support agent", '{"option": 1}'), (REPLY, reply)])
    stop = runner.start("t-contact", "I was charged twice this month", {}, events.append)
    assert (stop.status, stop.gate) == ("waiting", "review")
    assert stop.values["draft"] == "Compare the charges in Settings > Billing > Invoices."


def test_a_model_failure_escalates_to_a_human_instead_of_crashing(run, pool):
    runner, events = run([("Classify", RuntimeError("model exploded")), ("agent", RuntimeError("still down"))])
    stop = runner.start("t5", "Help with my invoice", {}, events.append)
    assert (stop.status, stop.gate) == ("waiting", "review")
    assert stop.values["needs_human"] is True
    assert "model exploded" in stop.values["error"]
    assert count_rows(pool, "tickets", thread_id="t5") == 1


def test_resuming_a_gate_without_a_decision_is_refused(run):
    runner, events = run(BILLING)
    runner.start("t6", "I was charged twice", {}, events.append)
    with pytest.raises(AwaitingDecision, match="waiting at gate review"):
        runner.resume("t6", events.append)


def test_the_gate_node_itself_refuses_to_run_without_a_decision(run, pool):
    runner, events = run(BILLING)
    runner.start("t6b", "I was charged twice", {}, events.append)
    with pytest.raises(GateError):
        runner.graph.invoke(None, {"configurable": {"thread_id": "t6b"}}, context=runner.context)


def test_progress_events_name_each_node_with_its_model_and_tokens(run):
    runner, events = run(BILLING)
    runner.start("t7", "I was charged twice this month", {}, events.append)
    ended = [e["node"] for e in events if e["event"] == "node_end"]
    assert ended == ["classify", "billing_agent", "draft_reply"], "classify's search is the agent's: no lookup_kb step"
    agent_end = next(e for e in events if e["event"] == "node_end" and e["node"] == "billing_agent")
    assert agent_end["calls"][0]["model"] == "scripted:primary"
    tokens = "".join(e["text"] for e in events if e["event"] == "token")
    assert "pending authorization" in tokens
    assert '"intent"' not in tokens, "structured answers are not streamed as prose"


def test_a_thread_saved_before_lookup_kb_by_an_older_version_resumes_to_its_gate(run, pool):
    """In an earlier version of the graph, classify was followed by its own lookup_kb step. A thread checkpointed
    with lookup_kb next (an upgrade mid-run, a crash) must still run on after the upgrade."""
    runner, events = run(BILLING)
    new_graph = runner.graph
    older = build_graph()
    older.branches.pop("classify")
    older.add_edge("classify", "lookup_kb")
    runner.graph = older.compile(checkpointer=new_graph.checkpointer, interrupt_before=["lookup_kb", "review"])
    runner.start("t-old", "I was charged twice this month", {}, events.append)
    assert runner.snapshot("t-old").next == ("lookup_kb",)

    runner.graph = new_graph
    stop = runner.resume("t-old", events.append)
    assert (stop.status, stop.gate) == ("waiting", "review")
    assert stop.values["article"] == stop.values["sources"][0]
    assert "pending authorization" in stop.values["draft"]
    ended = [e["node"] for e in events if e["event"] == "node_end"]
    assert ended == ["classify", "lookup_kb", "billing_agent", "draft_reply"]


def test_a_workers_run_reports_the_same_progress_as_an_inline_run(pool, make_context):
    """A worker's runs (`direct_events`) get the nodes' own events and the tokens handed over
    directly instead of through LangGraph's custom and messages stream modes (those
    modes cost the worker a tenth of its CPU): the same events, in the same order, and the
    retry audited, for a reply that fails once and is then streamed token by token."""
    reply = "Your payment is pending authorization and will clear in two days."

    def progress(thread_id: str, direct: bool) -> list[tuple]:
        rules = [(CLASSIFY, '{"intent": "billing"}'), (agent("billing"), ANSWERED), (REPLY, [TimeoutError("slow"), reply])]
        runner = ThreadRunner(pool, SUPPORT, make_context(scripted_registry(rules)))
        runner.direct_events = direct
        events: list[dict] = []
        stop = runner.start(thread_id, "I was charged twice this month", {}, events.append)
        assert stop.status == "waiting"
        return [(e["event"], e.get("node"), e.get("text"), e.get("attempt")) for e in events]

    inline, direct = progress("inline", False), progress("direct", True)
    assert direct == inline
    kinds = [e[0] for e in direct]
    assert kinds.count("retry") == 1 and kinds.index("retry") < kinds.index("token")
    assert "".join(e[2] for e in direct if e[0] == "token") == reply
    assert [e[1] for e in direct if e[0] == "token"] == ["draft_reply"] * len(reply.split(" "))
    assert count_rows(pool, "audit_events", thread_id="direct", kind="retry") == 1 == count_rows(pool, "audit_events", thread_id="inline", kind="retry")
