"""Deterministic chat models for graph tests (after LangGraph's own fake_chat.py)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterator, Sequence

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import PrivateAttr

from nodes.models import ModelHandle, ModelRegistry


# What scripted models answer at each step of the support graph, keyed by a needle that is in
# that step's prompt (graphs/support.py); kept here so every test scripts the same steps.
CLASSIFY = "Classify the customer message"
REPLY = "Write the reply to the customer"
REDRAFT = "Rewrite the support reply"
#: The agent's decision: the first knowledge-base article found answers the message ...
ANSWERED = '{"option": 1}'
#: ... or none does, and the thread escalates with a ticket.
CANNOT_ANSWER = '{"option": 0}'


#: The writing graphs' steps (nodes/writing.py): the writer and the reviewer.
WRITER = "You write short, clear markdown documents"
REVIEWER = "Score the draft"


def review(score: float, feedback: str = "Add an example.") -> str:
    """A reviewer's answer: the score and one line of feedback."""
    return f'{{"score": {score}, "feedback": "{feedback}"}}'


def agent(intent: str) -> str:
    """The needle of the intent's agent, the step that decides whether the knowledge base answers."""
    return f"{intent} support agent"


def support_rules(intent: str, reply: str | None = None) -> list[tuple[str, str]]:
    """Rules for one support thread: classified as `intent`, then answered with `reply` from
    the knowledge base, or escalated when `reply` is None."""
    if reply is None:
        return [(CLASSIFY, f'{{"intent": "{intent}"}}'), (agent(intent), CANNOT_ANSWER)]
    return [(CLASSIFY, f'{{"intent": "{intent}"}}'), (agent(intent), ANSWERED), (REPLY, reply)]


class ScriptedChatModel(BaseChatModel):
    """Answers by rule: the first (substring, answer) whose substring appears in the prompt.

    An answer may be a list, consumed one per call (the last one repeats); an answer that is
    an Exception instance is raised. Every prompt is kept in `prompts` for assertions.
    """

    rules: list[tuple[str, Any]]
    _calls: dict[int, int] = PrivateAttr(default_factory=lambda: defaultdict(int))
    _prompts: list[str] = PrivateAttr(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    @property
    def prompts(self) -> list[str]:
        return self._prompts

    def _answer(self, messages: Sequence[BaseMessage]) -> str:
        prompt = "\n".join(str(m.content) for m in messages)
        self._prompts.append(prompt)
        for index, (needle, answer) in enumerate(self.rules):
            if needle in prompt:
                if isinstance(answer, list):
                    n = self._calls[index]
                    self._calls[index] += 1
                    answer = answer[min(n, len(answer) - 1)]
                if isinstance(answer, BaseException):
                    raise answer
                return str(answer)
        raise AssertionError(f"no scripted answer for prompt: {prompt[:200]!r}")

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        text = self._answer(messages)
        usage = {"input_tokens": 10, "output_tokens": len(text.split()), "total_tokens": 10 + len(text.split())}
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text, usage_metadata=usage))])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        text = self._answer(messages)
        words = text.split(" ")
        for i, word in enumerate(words):
            piece = word if i == len(words) - 1 else word + " "
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        yield ChatGenerationChunk(message=AIMessageChunk(content="", usage_metadata={"input_tokens": 10, "output_tokens": len(words), "total_tokens": 10 + len(words)}))


def scripted_registry(rules: list[tuple[str, Any]], fallback_rules: list[tuple[str, Any]] | None = None) -> ModelRegistry:
    primary = ModelHandle("scripted:primary", ScriptedChatModel(rules=rules), structured_mode="prompt")
    fallback = ModelHandle("scripted:fallback", ScriptedChatModel(rules=fallback_rules), structured_mode="prompt") if fallback_rules else None
    return ModelRegistry(primary=primary, fallback=fallback)
