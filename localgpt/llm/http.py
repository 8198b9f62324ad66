"""The controller LLM on an engine that already runs: llama.cpp's server, llama-cpp-python's server, vLLM or
Ollama, spoken to over their OpenAI-compatible HTTP API (Ollama: its own ``/api/chat``).

The engine enforces the output constraint (the schema goes in the form it reads, :mod:`engine_schema`); the
reply is still validated here, and one that breaks the schema is an :class:`EngineError` naming the engine
and what to set, never a plan decoded without the constraint. Token counts and the context size come from
the engine where it offers them, else from a tokenizer file, else from a stated estimate
(:func:`estimate_tokens`). httpx is imported when the first request goes out.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from localgpt.errors import ConfigError, LocalGPTError
from localgpt.llm.base import Completion, LLMStats, Message, TokenCallback, plain, prompt_tokens
from localgpt.llm.engine_schema import ENGINES, FIX_HINTS, constraint_fields

log = logging.getLogger(__name__)

CONNECT_RETRIES = 3  # new attempts after a connection error (nothing reached the engine), 0.5, 1, 2 s apart
COUNT_CACHE = 4096  # token counts kept (the same history messages are counted again and again)
DEFAULT_CONTEXT = 4096  # assumed when the engine does not say (and no n_ctx is given)


class EngineError(LocalGPTError):
    """The LLM engine is unreachable, refused a request, or replied outside the constraint."""


def is_engine_url(planner: str) -> bool:
    """Whether a ``--planner`` value names an engine (``http://HOST:PORT/v1[#MODEL]``) rather than a GGUF."""
    return planner.startswith(("http://", "https://"))


def parse_engine_url(planner: str) -> tuple[str, str | None]:
    """``http://HOST:PORT/v1#MODEL`` as (the API's base URL without a trailing slash, the model or None)."""
    url, _, model = planner.partition("#")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"planner URL '{planner}' is not an http(s) address",
                          "e.g. --planner http://127.0.0.1:8080/v1#qwen2.5-coder")
    return url.rstrip("/"), (model or None)


def estimate_tokens(text: str) -> int:
    """The stated estimate used when neither the engine nor a tokenizer can count: one token per three
    UTF-8 bytes, rounded up (BPE vocabularies average about four bytes a token on English and a character or
    less on CJK text, whose characters take three bytes — so this rather over-counts, which only trims
    history a little earlier)."""
    return -(-len(text.encode("utf-8")) // 3) if text else 0


class HTTPLLM:
    """An LLM served by an engine over HTTP, behind the same protocol as :class:`LlamaCppLLM`.

    ``engine`` is one of :data:`ENGINES` or ``auto`` (probed on first use: ``/props`` answers on llama.cpp's
    server, ``/extras/tokenize/count`` on llama-cpp-python's, ``/api/version`` on Ollama, ``/v1/models``
    says ``owned_by: vllm`` on vLLM; anything else is spoken to as a plain OpenAI-compatible server).

    Example::

        llm = HTTPLLM("http://127.0.0.1:8080/v1", model="qwen2.5-coder-1.5b")
        llm.generate([{"role": "user", "content": "Say hi"}], max_tokens=8)
    """

    def __init__(self, base_url: str, *, model: str | None = None, api_key: str | None = None,
                 engine: str = "auto", n_ctx: int | None = None, timeout: float = 300.0,
                 tokenizer_file: str | Path | None = None, seed: int = 0) -> None:
        if engine != "auto" and engine not in ENGINES:
            raise ConfigError(f"engine '{engine}' is not known", f"use one of: auto, {', '.join(ENGINES)}")
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        self.root = f"{parts.scheme}://{parts.netloc}"  # where the engine's own routes (/props, /api/...) live
        self.model = model
        self.api_key = api_key
        self.engine = engine
        self._n_ctx = n_ctx
        self.n_ctx_source = "setting" if n_ctx else ""
        self.timeout = timeout
        self.tokenizer_file = Path(tokenizer_file) if tokenizer_file else None
        self.seed = seed
        self.stats = LLMStats()
        self.count_source = ""  # "engine", "tokenizer" or "estimate", once known
        self._lock = threading.Lock()
        self._probed = False
        self._client: Any = None
        self._tokenizer: Any = None
        self._counts: OrderedDict[str, int] = OrderedDict()

    # --- connection ---

    def _http(self) -> Any:
        if self._client is None:
            try:
                import httpx
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise ConfigError("an engine planner needs httpx", "install: pip install -e '.[http]'") from exc
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._client = httpx.Client(headers=headers, timeout=httpx.Timeout(self.timeout, connect=5.0),
                                        trust_env=False)  # no proxy from the environment: only this address
        return self._client

    def _request(self, method: str, url: str, *, stream: bool = False, **kwargs: Any) -> Any:
        """One request, retried only when the connection itself failed (nothing reached the engine)."""
        import httpx

        client = self._http()
        for attempt in range(CONNECT_RETRIES + 1):
            try:
                if stream:
                    return client.send(client.build_request(method, url, **kwargs), stream=True)
                return client.request(method, url, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt == CONNECT_RETRIES:
                    raise EngineError(f"cannot reach the LLM engine at {self.base_url}: {exc}",
                                      "is the engine running at that address? (--planner / LOCALGPT_PLANNER)") from exc
                time.sleep(0.5 * 2 ** attempt)
            except httpx.TimeoutException as exc:
                raise EngineError(f"the LLM engine at {self.base_url} did not answer within {self.timeout:.0f} s",
                                  "raise LOCALGPT_LLM_TIMEOUT, or give the engine fewer requests at once") from exc
            except httpx.HTTPError as exc:
                raise EngineError(f"the request to the LLM engine at {self.base_url} failed: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _get_json(self, url: str) -> Any:
        """The JSON at ``url``, or None when the route is absent or not JSON (probing)."""
        try:
            reply = self._request("GET", url)
        except EngineError:
            raise
        if reply.status_code != 200:
            return None
        try:
            return reply.json()
        except ValueError:
            return None

    def _check(self, reply: Any) -> None:
        if reply.status_code == 401 or reply.status_code == 403:
            raise EngineError(f"the LLM engine at {self.base_url} refused the key ({reply.status_code})",
                              "set LOCALGPT_LLM_API_KEY to the engine's key")
        if reply.status_code >= 400:
            text = reply.text if hasattr(reply, "text") else ""
            raise EngineError(f"the LLM engine at {self.base_url} answered {reply.status_code}: {text[:300]}",
                              f"check the model name (now {self.model!r}) and the engine's log")

    # --- what the engine is and offers ---

    def probe(self) -> None:
        """Find the engine, its model and its context size (once)."""
        with self._lock:
            if self._probed:
                return
            models = self._get_json(self.base_url + "/models")
            if models is None and self.engine != "ollama":
                raise EngineError(f"the LLM engine at {self.base_url} has no OpenAI-compatible /models route",
                                  "give the API's base URL, e.g. http://HOST:PORT/v1")
            listed = (models or {}).get("data") or []
            if self.model is None:
                if not listed:
                    raise EngineError(f"the LLM engine at {self.base_url} lists no model",
                                      "name one: --planner URL#MODEL")
                self.model = str(listed[0].get("id"))
            entry = next((m for m in listed if m.get("id") == self.model), listed[0] if listed else {})
            props = None
            if self.engine == "auto":
                self.engine, props = self._detect(entry)
            elif self.engine == "llama.cpp":
                props = self._get_json(self.root + "/props")
            if self._n_ctx is None:
                self._n_ctx, self.n_ctx_source = self._context(entry, props)
            self._probed = True
            log.info("LLM engine %s at %s, model %s, context %s (%s)", self.engine, self.base_url, self.model,
                     self._n_ctx, self.n_ctx_source)

    def _detect(self, entry: dict[str, Any]) -> tuple[str, Any]:
        props = self._get_json(self.root + "/props")
        if isinstance(props, dict) and "default_generation_settings" in props:
            return "llama.cpp", props
        if entry.get("owned_by") == "vllm":
            return "vllm", None
        version = self._get_json(self.root + "/api/version")
        if isinstance(version, dict) and "version" in version:
            return "ollama", None
        reply = self._request("POST", self.root + "/extras/tokenize/count", json={"input": "a"})
        if reply.status_code == 200 and "count" in reply.text:
            return "llama-cpp-python", None
        return "openai", None

    def _context(self, entry: dict[str, Any], props: Any) -> tuple[int, str]:
        """The context size the engine serves, and where it came from."""
        if isinstance(props, dict):
            settings = props.get("default_generation_settings") or {}
            n = settings.get("n_ctx") or props.get("n_ctx")
            if n:  # the context of one slot (llama-server --parallel N splits --ctx-size among N)
                return int(n), "engine"
        if entry.get("max_model_len"):  # vLLM
            return int(entry["max_model_len"]), "engine"
        meta = entry.get("meta") or {}
        if meta.get("n_ctx_train"):
            return int(meta["n_ctx_train"]), "engine"
        if self.engine == "ollama":
            show = self._request("POST", self.root + "/api/show", json={"model": self.model})
            if show.status_code == 200:
                info = show.json()
                for line in str(info.get("parameters", "")).splitlines():
                    if line.split()[:1] == ["num_ctx"]:
                        return int(line.split()[1]), "engine"
                for key, value in (info.get("model_info") or {}).items():
                    if key.endswith(".context_length"):
                        return min(int(value), DEFAULT_CONTEXT), "engine (model's length; Ollama's default is less)"
        return DEFAULT_CONTEXT, f"assumed {DEFAULT_CONTEXT}: the engine does not say (set LOCALGPT_N_CTX)"

    @property
    def n_ctx(self) -> int:
        if self._n_ctx is None:
            self.probe()
        assert self._n_ctx is not None
        return self._n_ctx

    @n_ctx.setter
    def n_ctx(self, value: int) -> None:
        self._n_ctx = value

    # --- tokens ---

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text``: counted by the engine where it offers a route, else by the tokenizer file,
        else :func:`estimate_tokens` (:attr:`count_source` says which)."""
        if not text:
            return 0
        with self._lock:
            if text in self._counts:
                self._counts.move_to_end(text)
                return self._counts[text]
        self.probe()
        n = self._count(text)
        with self._lock:
            self._counts[text] = n
            while len(self._counts) > COUNT_CACHE:
                self._counts.popitem(last=False)
        return n

    def _count(self, text: str) -> int:
        if self.count_source in ("", "engine"):
            n = self._engine_count(text)
            if n is not None:
                self.count_source = "engine"
                return n
        if self.tokenizer_file is not None and self.tokenizer_file.is_file():
            if self._tokenizer is None:
                from tokenizers import Tokenizer

                self._tokenizer = Tokenizer.from_file(str(self.tokenizer_file))
            self.count_source = "tokenizer"
            return len(self._tokenizer.encode(text, add_special_tokens=False).ids)
        self.count_source = "estimate"
        return estimate_tokens(text)

    def _engine_count(self, text: str) -> int | None:
        if self.engine == "llama.cpp":
            reply = self._request("POST", self.root + "/tokenize", json={"content": text})
            return len(reply.json()["tokens"]) if reply.status_code == 200 else None
        if self.engine == "llama-cpp-python":
            reply = self._request("POST", self.root + "/extras/tokenize/count", json={"input": text})
            return int(reply.json()["count"]) if reply.status_code == 200 else None
        if self.engine == "vllm":
            reply = self._request("POST", self.root + "/tokenize",
                                  json={"model": self.model, "prompt": text, "add_special_tokens": False})
            return int(reply.json()["count"]) if reply.status_code == 200 else None
        return None

    # --- generation ---

    def generate(
        self,
        messages: Sequence[Message],
        *,
        schema: dict[str, Any] | None = None,
        max_tokens: int = 512,
        temperature: float = 0.0,
        on_token: TokenCallback | None = None,
        seed: int | None = None,
        repeat_penalty: float = 1.0,
    ) -> str:
        """Reply to ``messages``; see :class:`LLM`. With ``schema`` the engine constrains the reply and it is
        checked here: a reply cut at ``max_tokens`` is asked again once with the room the context has left,
        and a complete reply that breaks the schema is an :class:`EngineError`."""
        return self.complete(messages, schema=schema, max_tokens=max_tokens, temperature=temperature,
                             on_token=on_token, seed=seed, repeat_penalty=repeat_penalty).text

    def complete(
        self,
        messages: Sequence[Message],
        *,
        schema: dict[str, Any] | None = None,
        max_tokens: int = 512,
        temperature: float = 0.0,
        on_token: TokenCallback | None = None,
        seed: int | None = None,
        repeat_penalty: float = 1.0,
    ) -> Completion:
        """:meth:`generate`'s reply with its tokens, as the engine reports them (its ``usage``), summed over
        both requests when a cut reply was asked again; counted here when the engine reports none."""
        self.probe()
        start = time.perf_counter()
        text, finish, usage = self._complete(messages, schema, max_tokens, temperature, on_token, seed,
                                             repeat_penalty)
        used = [usage]
        if schema is not None and finish == "length":
            room = self.n_ctx - sum(self.count_tokens(m["content"]) + 8 for m in messages) - 16
            if room > max_tokens:  # a long reply in a language the vocabulary spells in many tokens
                log.info("constrained reply cut at %d tokens; asking again with %d", max_tokens, room)
                text, finish, usage = self._complete(messages, schema, room, temperature, on_token, seed,
                                                     repeat_penalty)
                used.append(usage)
        if schema is not None and finish != "length":
            self._validate(text, schema)
        prompt = sum(int(u.get("prompt_tokens") or 0) for u in used)
        generated = sum(int(u.get("completion_tokens") or 0) for u in used)
        self.stats.decode_seconds += time.perf_counter() - start
        self.stats.calls += 1
        self.stats.prompt_tokens += prompt
        self.stats.prompt_tokens_evaluated += prompt
        self.stats.completion_tokens += generated
        return Completion(text, prompt or prompt_tokens(self, messages) * len(used),
                          generated or self.count_tokens(text))

    def _validate(self, text: str, schema: dict[str, Any]) -> None:
        import jsonschema

        try:
            jsonschema.validate(json.loads(text), schema)
        except (json.JSONDecodeError, jsonschema.ValidationError) as exc:
            detail = str(exc).splitlines()[0]
            raise EngineError(
                f"the LLM engine '{self.engine}' at {self.base_url} replied outside the JSON schema it was sent "
                f"({detail}): it did not apply the constraint, so the reply is not used",
                FIX_HINTS.get(self.engine, FIX_HINTS["openai"])) from exc

    def _body(self, messages: Sequence[Message], schema: dict[str, Any] | None, max_tokens: int,
              temperature: float, stream: bool, seed: int | None, repeat_penalty: float) -> dict[str, Any]:
        seed = self.seed if seed is None else seed
        msgs = plain(messages)
        if self.engine == "ollama":
            options: dict[str, Any] = {"num_predict": max_tokens, "temperature": temperature, "seed": seed,
                                       "num_ctx": self.n_ctx}
            if repeat_penalty != 1.0:
                options["repeat_penalty"] = repeat_penalty
            body: dict[str, Any] = {"model": self.model, "messages": msgs, "stream": stream, "options": options}
        else:
            body = {"model": self.model, "messages": msgs, "max_tokens": max_tokens, "temperature": temperature,
                    "seed": seed, "stream": stream}
            if repeat_penalty != 1.0:  # not an OpenAI field: llama.cpp's name, and vLLM's
                body["repetition_penalty" if self.engine == "vllm" else "repeat_penalty"] = repeat_penalty
            if stream and self.engine in ("vllm", "llama.cpp", "openai"):
                body["stream_options"] = {"include_usage": True}
        if schema is not None:
            body.update(constraint_fields(self.engine, schema))
        return body

    def _complete(self, messages: Sequence[Message], schema: dict[str, Any] | None, max_tokens: int,
                  temperature: float, on_token: TokenCallback | None, seed: int | None,
                  repeat_penalty: float) -> tuple[str, str, dict[str, Any]]:
        """(text, finish reason, usage) of one completion, streamed to ``on_token`` when given."""
        stream = on_token is not None
        body = self._body(messages, schema, max_tokens, temperature, stream, seed, repeat_penalty)
        url = self.root + "/api/chat" if self.engine == "ollama" else self.base_url + "/chat/completions"
        if not stream:
            reply = self._request("POST", url, json=body)
            self._check(reply)
            data = reply.json()
            if self.engine == "ollama":
                usage = {"prompt_tokens": data.get("prompt_eval_count"), "completion_tokens": data.get("eval_count")}
                return data["message"]["content"], _ollama_finish(data), usage
            choice = data["choices"][0]
            return choice["message"]["content"] or "", choice.get("finish_reason") or "", data.get("usage") or {}
        reply = self._request("POST", url, json=body, stream=True)
        try:
            if reply.status_code >= 400:
                reply.read()
            self._check(reply)
            parts: list[str] = []
            finish, usage = "", {}
            for delta, done, got in self._events(reply):
                if delta:
                    parts.append(delta)
                    assert on_token is not None
                    on_token(delta)
                finish = done or finish
                usage = got or usage
            return "".join(parts), finish, usage
        finally:
            reply.close()

    def _events(self, reply: Any) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """(text delta, finish reason, usage) of each streamed event (SSE, or Ollama's JSON lines)."""
        for line in reply.iter_lines():
            if self.engine == "ollama":
                if not line.strip():
                    continue
                data = json.loads(line)
                usage = {"prompt_tokens": data.get("prompt_eval_count"),
                         "completion_tokens": data.get("eval_count")} if data.get("done") else {}
                yield (data.get("message") or {}).get("content", ""), _ollama_finish(data), usage
                continue
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                break
            data = json.loads(payload)
            usage = data.get("usage") or {}
            for choice in data.get("choices") or []:
                yield ((choice.get("delta") or {}).get("content") or "", choice.get("finish_reason") or "", usage)
                usage = {}
            if usage:
                yield "", "", usage

    def describe(self) -> dict[str, Any]:
        """What is known about the engine: its kind, model, context size and where each came from."""
        self.probe()
        return {"engine": self.engine, "url": self.base_url, "model": self.model, "n_ctx": self.n_ctx,
                "n_ctx_source": self.n_ctx_source, "count_source": self.count_source or "not yet counted"}

    def close(self) -> None:
        """Close the connections."""
        if self._client is not None:
            self._client.close()
            self._client = None


def _ollama_finish(data: dict[str, Any]) -> str:
    """Ollama's ``done_reason`` in OpenAI's words ("length" when the reply was cut)."""
    if not data.get("done"):
        return ""
    return "length" if data.get("done_reason") == "length" else "stop"
