"""The controller LLM in-process: a GGUF model run by llama-cpp-python, decoding constrained with outlines
(llguidance); llama_cpp is imported only when the model loads."""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from localgpt.config import (
    FAST_FORWARD_DEFAULT,
    FLASH_ATTN_DEFAULT,
    N_BATCH_DEFAULT,
    N_UBATCH_DEFAULT,
    PROMPT_LOOKUP_DEFAULT,
)
from localgpt.errors import ConfigError, LocalGPTError
from localgpt.llm.base import (
    KEEP,
    MESSAGE_OVERHEAD,
    Completion,
    LLMStats,
    Message,
    TokenCallback,
    plain,
    schema_key,
    schema_label,
)
from localgpt.llm.prompt_state import PromptStateCache, SavedState, model_identity, state_key

CONSTRAINT_CACHE = 32  # compiled constraints kept (least recently used dropped first)
PREFIX_MIN_TOKENS = 48  # a system prompt shorter than this is re-read rather than kept (a few ms of work)
KEEP_ALIGN = 8  # a marked prefix's state ends a multiple of this many tokens past the system prompt's (_load_kept)
log = logging.getLogger(__name__)
_DEFAULT: Any = object()
class CheckedProcessor:
    """Wraps a logits processor so that an error inside it is not lost.

    llama-cpp-python calls logits processors from a C callback, where an exception is printed and
    dropped and decoding goes on unconstrained. This records the first error, from then on allows
    only the end-of-sequence token, and lets ``generate`` raise it.
    """

    def __init__(self, inner: Any, eos: int) -> None:
        self.inner = inner
        self.eos = eos
        self.error: Exception | None = None

    def reset(self) -> None:
        """Start a new generation."""
        self.error = None
        self.inner.reset()

    def __call__(self, input_ids: Any, logits: Any) -> Any:
        if self.error is None:
            try:
                return self.inner(input_ids, logits)
            except Exception as exc:
                self.error = exc
        logits[:] = float("-inf")
        logits[self.eos] = 0.0
        return logits


def lean_state_cache(capacity_bytes: int) -> Any:
    """A llama.cpp RAM state cache that keeps only what prefix reuse needs and counts all it keeps.

    llama-cpp-python's own cache stores a copy of the logits of every prompt position (hundreds of
    MB per entry for a 150k vocabulary) without counting it against the capacity, so memory grows
    with each call. Only the last row is ever read back (the next call evaluates at least one fresh
    token, which overwrites the logits), so that row alone is kept, and the size counts everything.
    """
    import llama_cpp

    class LeanStateCache(llama_cpp.LlamaRAMCache):
        def __setitem__(self, key: Any, value: Any) -> None:
            value.scores = value.scores[-1:].copy()
            super().__setitem__(key, value)

        @property
        def cache_size(self) -> int:
            return sum(s.llama_state_size + s.scores.nbytes + s.input_ids.nbytes for s in self.cache_state.values())

    return LeanStateCache(capacity_bytes=capacity_bytes)


def context_bytes(ctx: Any) -> bytes:
    """llama.cpp's state of a context (its KV cache), read directly: ``Llama.save_state`` would also copy
    the logits rows llama-cpp-python keeps (``n_batch`` rows of the vocabulary, 311 MB for Qwen at 512),
    which are never read without ``logits_all``, and copy the state twice more."""
    import ctypes

    import llama_cpp

    size = int(llama_cpp.llama_state_get_size(ctx))
    buffer = (ctypes.c_uint8 * size)()
    written = int(llama_cpp.llama_state_get_data(ctx, buffer, size))
    if written > size:
        raise LocalGPTError("llama.cpp wrote more state than it announced", "update llama-cpp-python")
    return bytes(memoryview(buffer)[:written])


def lean_llama(**kwargs: Any) -> Any:
    """A ``llama_cpp.Llama`` whose ``save_state`` (called by ``create_completion`` after every reply, for
    the RAM state cache) copies the context's state once and one zero logits row: without ``logits_all``
    sampling reads llama.cpp's own logits, and the next call evaluates at least one token, so the rows
    llama-cpp-python's own ``save_state`` copies (a second per call for Qwen) are never read back."""
    import llama_cpp
    import numpy as np

    class LeanLlama(llama_cpp.Llama):
        def save_state(self) -> Any:
            if self._logits_all:  # (never so in localgpt) the rows are the logits then
                return super().save_state()
            state = context_bytes(self._ctx.ctx)
            return llama_cpp.LlamaState(input_ids=self.input_ids.copy(),
                                        scores=np.zeros((1, self.n_vocab()), dtype=np.single),
                                        n_tokens=self.n_tokens, llama_state=state, llama_state_size=len(state),
                                        seed=self._seed)

    return LeanLlama(**kwargs)


class LlamaCppLLM:
    """A GGUF model run by llama-cpp-python, constrained by outlines.

    The constraint for each distinct schema is compiled once and cached; calls are serialised
    (llama.cpp contexts are not thread-safe). With ``prompt_cache_mb`` > 0 the model's state after
    each call is kept in RAM and the longest matching prompt prefix is reused, so a fixed system
    prompt is evaluated once rather than on every request (prompt evaluation dominates on a CPU).
    With a ``prompt_state`` disk cache (by default the one ``LOCALGPT_PROMPT_CACHE_DIR`` /
    ``LOCALGPT_PROMPT_CACHE_DISK_MB`` describe; None: off), the evaluated state of a long system prompt
    is also saved to disk and loaded by the next process instead of being evaluated again
    (:mod:`localgpt.llm.prompt_state`). ``n_batch``, ``n_ubatch`` and ``flash_attn`` go to llama.cpp (the
    defaults are the settings', measured for prompt evaluation on a CPU). With ``fast_forward`` a greedy
    constrained reply is decoded by :meth:`_decode_forced`: the tokens the constraint leaves no choice about
    (``","dep":[`` between two values) are appended without a decoding step each and evaluated in one batch
    with the next. With ``prompt_lookup`` > 0 the same greedy constrained reply also drafts up to that many
    tokens by prompt lookup (:class:`NgramIndex`: what followed the reply's last tokens where they last
    occurred in the prompt or the reply) and checks them in one batch: each drafted token greedy decoding
    would have chosen is kept, the first it would not is replaced by its choice. :meth:`warm` does the first
    call's one-time work (load, constraint, system-prompt state) ahead of it. The GGUF is read into memory
    unless ``use_mmap``: on a CPU llama.cpp repacks most quantised weights into buffers of its own, and the
    mapped pages they came from would stay resident beside them.

    Example::

        llm = LlamaCppLLM("model_store/qwen2.5-coder-1.5b-instruct/model.gguf", n_threads=2)
        llm.generate([{"role": "user", "content": "Say hi"}], max_tokens=8)
    """

    def __init__(
        self,
        path: str | Path,
        *,
        n_ctx: int = 4096,
        n_threads: int = 2,
        n_gpu_layers: int = 0,
        backend: str = "llguidance",
        seed: int = 0,
        prompt_cache_mb: int = 128,
        prompt_state: PromptStateCache | None = _DEFAULT,
        n_batch: int = N_BATCH_DEFAULT,
        n_ubatch: int = N_UBATCH_DEFAULT,
        flash_attn: bool = FLASH_ATTN_DEFAULT,
        fast_forward: bool = FAST_FORWARD_DEFAULT,
        prompt_lookup: int = PROMPT_LOOKUP_DEFAULT,
        use_mmap: bool = False,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(
                f"planner model file '{self.path}' does not exist",
                "install one with: python download_models.py --profile starter, or pass --planner PATH.gguf",
            )
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.n_gpu_layers = n_gpu_layers
        self.backend = backend
        self.seed = seed
        self.prompt_cache_mb = prompt_cache_mb
        self.prompt_state = PromptStateCache.from_env() if prompt_state is _DEFAULT else prompt_state
        self.n_batch = n_batch
        self.n_ubatch = n_ubatch
        self.flash_attn = flash_attn
        self.fast_forward = fast_forward
        self.prompt_lookup = prompt_lookup
        self.use_mmap = use_mmap
        # per call: "disk", "memory", "evaluated", "kept" (a marked prefix's state from disk), "failed" (a state
        # llama.cpp refused) or "" (no prefix state)
        self.prefix_events: list[str] = []
        self._prefixes: OrderedDict[str, Any] = OrderedDict()  # state key -> llama_cpp.LlamaState
        self._formatter: Any = None
        self._chat_formatter: Any = None
        self.stats = LLMStats()
        self._lock = threading.RLock()
        self._llama: Any = None
        self._model: Any = None
        self._generators: OrderedDict[str, Any] = OrderedDict()
        self._grammars: OrderedDict[str, str] = OrderedDict()  # llguidance grammars for localgpt's own loop
        self._llg_tokenizer: Any = None  # the model's llguidance tokenizer, taken from the first generator

    def _ensure_loaded(self) -> None:
        """Load the GGUF file (once)."""
        if self._llama is not None:
            return
        try:
            import llama_cpp  # noqa: F401 (lean_llama's; a missing package is said here)
            import outlines
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigError(
                f"the LLM needs a package that is not installed: {exc.name}",
                "install localgpt with: pip install -e '.[cpu]'",
            ) from exc
        try:
            self._llama = lean_llama(
                model_path=str(self.path),
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads,
                n_gpu_layers=self.n_gpu_layers,
                seed=self.seed,
                n_batch=self.n_batch,
                n_ubatch=self.n_ubatch,
                flash_attn=self.flash_attn,
                use_mmap=self.use_mmap,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise ConfigError(f"cannot load GGUF model '{self.path}': {exc}", "is it a valid GGUF file?") from exc
        if self.prompt_cache_mb > 0:
            self._llama.set_cache(lean_state_cache(self.prompt_cache_mb << 20))
        self._model = outlines.from_llamacpp(self._llama)

    def constraint(self, schema: dict[str, Any] | None) -> Any:
        """The outlines generator for ``schema``, compiled on first use and then reused."""
        key = schema_key(schema)
        with self._lock:
            self._ensure_loaded()
            gen: Any = self._generators.get(key)
            if gen is not None:
                self._generators.move_to_end(key)
            else:
                import outlines
                from outlines.types import JsonSchema

                start = time.perf_counter()
                if schema is None:
                    gen = outlines.Generator(self._model)
                else:
                    gen = outlines.Generator(self._model, JsonSchema(self._prepare(schema)), backend=self.backend)
                    tokenizer = getattr(gen.logits_processor, "llg_tokenizer", None)
                    if self._llg_tokenizer is None and tokenizer is not None:
                        self._llg_tokenizer = tokenizer  # (built from the vocabulary: ~1 s, once)
                    gen.logits_processor = CheckedProcessor(gen.logits_processor, self._llama.token_eos())
                self.stats.constraint_builds[schema_label(key)] = time.perf_counter() - start
                self._generators[key] = gen
                while len(self._generators) > CONSTRAINT_CACHE:  # per-request schemas (a type shortlist)
                    self._generators.popitem(last=False)
            return gen

    def _grammar(self, schema: dict[str, Any]) -> tuple[str | None, Any]:
        """The llguidance grammar of ``schema`` and the model's llguidance tokenizer, for localgpt's own decoding
        loop (:meth:`_decode_forced`): the grammar outlines' llguidance backend would write, kept per schema
        (:data:`CONSTRAINT_CACHE` of them) and built in milliseconds, where outlines builds a generator, and
        with it the tokenizer again, in about a second. So a constraint made for one request (the files it
        gives: ``PlannerOptions.exact_files``) costs that request little. The tokenizer comes from the first
        generator built (:meth:`constraint`, which ``Pipeline.warm`` calls); (None, None) for another backend."""
        if self.backend != "llguidance":
            return None, None
        if self._llg_tokenizer is None:
            self.constraint(schema)
        key = schema_key(schema)
        grammar = self._grammars.get(key)
        if grammar is not None:
            self._grammars.move_to_end(key)
        else:
            import llguidance

            start = time.perf_counter()
            grammar = str(llguidance.grammar_from("json_schema", self._prepare(schema)))
            self.stats.constraint_builds.setdefault(schema_label(key), time.perf_counter() - start)
            self._grammars[key] = grammar
            while len(self._grammars) > CONSTRAINT_CACHE:
                self._grammars.popitem(last=False)
        return grammar, self._llg_tokenizer

    def _prepare(self, schema: dict[str, Any]) -> str:
        """The schema as the chosen backend wants it (llguidance: compact JSON, no free whitespace)."""
        schema = copy.deepcopy(schema)
        if self.backend == "llguidance":
            schema["x-guidance"] = {"whitespace_flexible": False}
        return json.dumps(schema)

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
        """Reply to ``messages``; see :class:`LLM`."""
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
        """:meth:`generate`'s reply with its tokens: the prompt's (the messages in this model's vocabulary,
        each with :data:`MESSAGE_OVERHEAD`, whether evaluated or taken from a cached state) and the
        reply's."""
        from outlines.inputs import Chat

        with self._lock:
            self._ensure_loaded()
            prompt = Chat(plain(messages))
            kwargs: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature,
                                      "seed": self.seed if seed is None else seed}
            if repeat_penalty != 1.0:
                kwargs["repeat_penalty"] = repeat_penalty
            start = time.perf_counter()
            self._perf_reset()
            try:
                self.prefix_events.append(self._load_prefix(messages))
                forced: tuple[str, int] | None = None
                gen: Any = None
                if (on_token is None and schema is not None and temperature == 0.0 and repeat_penalty == 1.0
                        and (self.fast_forward or self.prompt_lookup > 0)):
                    forced = self._decode_forced(messages, *self._grammar(schema), max_tokens)
                if forced is None:
                    gen = self.constraint(schema)
                if forced is not None:
                    text, skipped = forced
                elif on_token is None:
                    text = gen(prompt, **kwargs)
                else:
                    parts = []
                    for chunk in gen.stream(prompt, **kwargs):
                        if chunk:
                            parts.append(chunk)
                            on_token(chunk)
                    text = "".join(parts)
            except (ValueError, RuntimeError) as exc:
                raise LocalGPTError(f"the LLM failed: {exc}", "the prompt may exceed the context window") from exc
            finally:
                self._llama.reset()
            failure = None if gen is None else getattr(gen.logits_processor, "error", None)
            if failure is not None:
                raise LocalGPTError(f"the output constraint failed while decoding: {failure!r}",
                                    f"try the other constraint backend (now {self.backend})") from failure
            self.stats.decode_seconds += time.perf_counter() - start
            self.stats.calls += 1
            contents = sum(self.count_tokens(m["content"]) for m in messages)
            generated = self.count_tokens(text)
            self.stats.prompt_tokens += contents
            self.stats.prompt_tokens_evaluated += self._perf_prompt_tokens() - (forced[1] if forced else 0)
            self.stats.completion_tokens += generated
            return Completion(str(text), contents + MESSAGE_OVERHEAD * len(messages), generated)

    def _decode_forced(self, messages: Sequence[Message], grammar: str | None, tokenizer: Any,
                       max_tokens: int) -> tuple[str, int] | None:
        """A greedy reply to ``messages`` under the llguidance ``grammar`` (:meth:`_grammar`), decoded by
        localgpt's own loop with ``fast_forward`` and ``prompt_lookup``. Fast-forward: wherever the constraint
        admits one continuation only (a key, the punctuation between values, the end of a task name once its start
        is chosen), its tokens (``compute_ff_tokens``) are taken as they are and evaluated together with the next
        token, in one llama.cpp batch, instead of one decoding step each. Prompt lookup: the tokens that followed
        the reply's last few where they last occurred (:class:`NgramIndex`) are evaluated in the same batch, with
        logits at each, and kept as long as each is the argmax of its masked logits. Every token not forced is the
        argmax of the masked logits, as in the plain path. Returns the text and how many tokens were forced, or
        None when this path does not apply (another backend, no chat template); the caller then decodes
        as usual. The prompt is the one llama-cpp-python's chat handler writes for ``messages`` (the GGUF's
        template, its generation prompt), and the RAM state cache is read and written as ``create_completion``
        does."""
        if grammar is None or tokenizer is None:  # (the caller asks only with fast_forward or prompt_lookup on)
            return None
        prompt = self._prompt_tokens(messages)
        if prompt is None:
            return None
        if len(prompt) >= self.n_ctx:  # as llama-cpp-python says it (complete() turns it into a LocalGPTError)
            raise ValueError(f"Requested tokens ({len(prompt)}) exceed context window of {self.n_ctx}")
        max_tokens = min(max_tokens, self.n_ctx - len(prompt))
        import llama_cpp
        import llguidance
        import llguidance.numpy as llg_np
        import numpy as np

        llama = self._llama
        matcher = llguidance.LLMatcher(tokenizer, grammar)
        mask = llg_np.allocate_token_bitmask(1, tokenizer.vocab_size)
        failure: list[str] = []
        eos = llama.token_eos()
        n_vocab = llama.n_vocab()

        def masked(logits: Any) -> Any:  # the logits the constraint allows (a copy), or only EOS after a failure
            row = np.array(logits, dtype=np.float32)
            if not failure:
                try:
                    llg_np.fill_next_token_bitmask(matcher, mask, 0)
                    llg_np.apply_token_bitmask_inplace(row, mask[0])
                    return row
                except Exception as exc:  # raised in llama.cpp's C callback it would be dropped (CheckedProcessor)
                    failure.append(repr(exc))
            row[:] = float("-inf")
            row[eos] = 0.0
            return row

        def constrain(_ids: Any, logits: Any) -> Any:  # llama.cpp's candidates: a strided view, so a copy
            return masked(logits)

        def ends(token: int) -> bool:
            return bool(failure) or token == eos or bool(llama_cpp.llama_vocab_is_eog(llama._model.vocab, token))

        common = self._resume(prompt)
        pending, out, skipped = list(prompt[common:]), list[int](), 0
        index = NgramIndex(prompt) if self.prompt_lookup > 0 else None

        def take(token: int) -> bool:
            """Whether ``token`` continues the reply: then the constraint has consumed it and it is appended
            (and indexed for prompt lookup); False at the reply's end or when the constraint refuses it."""
            if ends(token):
                return False
            if not matcher.consume_token(token):
                failure.append(matcher.get_error() or f"token {token} refused")
                return False
            out.append(token)
            if index is not None:
                index.extend([token])
            return True

        # a sampler of this call's own: llama-cpp-python leaves the last generate()'s on the Llama
        sampler = llama._init_sampler(temp=0.0, logits_processor=llama_cpp.LogitsProcessorList([constrain]))
        while True:
            ff = matcher.compute_ff_tokens()[: max_tokens - len(out)] if self.fast_forward else []
            if ff:
                if not matcher.consume_tokens(ff):
                    failure.append(matcher.get_error() or "forced tokens refused")
                    break
                out += ff
                pending += ff
                skipped += len(ff)
                if index is not None:
                    index.extend(ff)
            if len(out) >= max_tokens or matcher.is_stopped():
                break
            draft = index.draft(self.prompt_lookup) if index is not None and out else []
            draft = draft[: max(0, min(max_tokens - len(out) - 1, llama.n_batch - len(pending)))]
            if not draft:
                llama.eval(pending)
                pending = []
                token = int(sampler.sample(llama._ctx, -1))
                if not take(token):
                    break
                pending = [token]
                continue
            # the draft checked in one batch: logits after the last pending token and after each drafted one
            valid = llama.n_tokens + len(pending)  # context tokens known right once the batch is evaluated
            rows = self._eval_rows(pending + draft, len(draft) + 1, n_vocab)
            self.stats.drafted_tokens += len(draft)
            taken, stop = 0, False
            pending = []
            for j, row in enumerate(rows):
                token = int(np.argmax(masked(row)))
                if not take(token):
                    stop = True
                    break
                if j < len(draft) and token == draft[j]:
                    taken += 1
                    if len(out) >= max_tokens or matcher.is_stopped():
                        break
                    continue
                pending = [token]  # the model's own choice where the draft went wrong (or after it all): not evaluated
                break
            self.stats.accepted_draft_tokens += taken
            llama.n_tokens = valid + taken  # the next eval drops what the context holds past the kept draft
            if failure or stop:
                break
        if failure:
            raise LocalGPTError(f"the output constraint failed while decoding: {failure[0]}",
                                f"try the other constraint backend (now {self.backend})")
        if pending:  # the last tokens, so the state kept below holds the whole reply
            llama.eval(pending)
        if llama.cache is not None:
            llama.cache[prompt + out] = llama.save_state()
        self.stats.forced_tokens += skipped
        return llama.detokenize(out).decode("utf-8", errors="ignore"), skipped

    def ending_logprobs(self, messages: Sequence[Message], prefix: str, endings: Sequence[str]) -> list[float]:
        """The log-probability the model gives each of ``endings`` written right after ``prefix`` at the start
        of its reply to ``messages``, with no constraint: the model's own preference between them. The tokens
        of ``prefix + ending`` past those all the endings share are scored one by one (an ending is a few
        tokens). The context comes from the RAM state cache when a reply to ``messages`` was just decoded, so
        only the endings are evaluated. :class:`LocalGPTError` when the model has no chat template."""
        import numpy as np

        def logsoftmax_at(row: Any, token: int) -> float:
            top = float(row.max())
            return float(row[token]) - top - float(np.log(np.exp(row - top).sum()))

        with self._lock:
            self._ensure_loaded()
            llama = self._llama
            prompt = self._prompt_tokens(messages)
            if prompt is None:
                raise LocalGPTError("the planner model has no chat template", "use a GGUF file that has one")
            seqs = [prompt + llama.tokenize((prefix + e).encode("utf-8"), add_bos=False, special=False)
                    for e in endings]
            shared = len(prompt)
            while all(len(q) > shared for q in seqs) and len({q[shared] for q in seqs}) == 1:
                shared += 1
            base, n_vocab = seqs[0][:shared], llama.n_vocab()
            if max(len(q) for q in seqs) >= self.n_ctx:
                raise LocalGPTError("the prompt and its endings exceed the context window")
            try:
                self.prefix_events.append(self._load_prefix(messages))
                common = self._resume(base)
                if len(base) - 1 > common:
                    llama.eval(base[common:-1])
                first = self._eval_rows([base[-1]], 1, n_vocab)[0]
                scores = []
                for q in seqs:
                    tail = q[shared:]
                    llama.n_tokens = len(base)
                    rows = [first, *(self._eval_rows(tail[:-1], len(tail) - 1, n_vocab) if len(tail) > 1 else [])]
                    scores.append(sum(logsoftmax_at(row, t) for row, t in zip(rows, tail, strict=False)))
                return scores
            finally:
                llama.reset()

    def _eval_rows(self, tokens: list[int], n_rows: int, n_vocab: int) -> list[Any]:
        """Evaluate ``tokens`` after the context's first ``n_tokens`` in one llama.cpp batch (at most
        ``n_batch`` tokens) and return the logits after each of the last ``n_rows`` (copies), as
        ``Llama.eval`` does for the last one only."""
        import numpy as np

        llama = self._llama
        llama._ctx.kv_cache_seq_rm(-1, llama.n_tokens, -1)
        n_past = llama.n_tokens
        llama._batch.set_batch(batch=tokens, n_past=n_past, logits_all=False)
        for i in range(len(tokens) - n_rows, len(tokens)):
            llama._batch.batch.logits[i] = True
        llama._ctx.decode(llama._batch)
        llama.input_ids[n_past:n_past + len(tokens)] = tokens
        llama.n_tokens = n_past + len(tokens)
        return [np.ctypeslib.as_array(llama._ctx.get_logits_ith(i), shape=(n_vocab,)).copy()
                for i in range(len(tokens) - n_rows, len(tokens))]

    def _prompt_tokens(self, messages: Sequence[Message]) -> list[int] | None:
        """The prompt llama-cpp-python's chat handler makes of ``messages`` with the GGUF's chat template
        (its generation prompt added), as tokens; None without a template."""
        if self._chat_formatter is None:
            self._chat_formatter = self._template_formatter(generation_prompt=True)
        if not self._chat_formatter:
            return None
        result = self._chat_formatter(messages=plain(messages))
        return list(self._llama.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special,
                                         special=True))

    def _template_formatter(self, *, generation_prompt: bool) -> Any:
        """A formatter of the GGUF's chat template as llama-cpp-python's chat handler builds it (its EOS and
        BOS texts), with or without the generation prompt after the last message; False without a
        template."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self._llama.metadata.get("tokenizer.chat_template")
        if not template:
            return False

        def text_of(token: int) -> str:
            return str(self._llama._model.token_get_text(token)) if token != -1 else ""

        return Jinja2ChatFormatter(template=template, eos_token=text_of(self._llama.token_eos()),
                                   bos_token=text_of(self._llama.token_bos()),
                                   add_generation_prompt=generation_prompt)

    def _resume(self, prompt: list[int]) -> int:
        """Keep in the context as much of ``prompt`` as is already evaluated, and say how many tokens: first
        the RAM state cache's entry sharing the longest prefix with ``prompt`` is loaded when it shares more
        than the context holds now (as ``create_completion`` does); then the context is cut to the tokens it
        shares with ``prompt`` (a loaded prefix state, the cache's), less one at least, so that one is
        evaluated and the logits are fresh."""
        import llama_cpp

        llama = self._llama
        have = llama_cpp.Llama.longest_token_prefix(llama._input_ids.tolist(), prompt)
        try:
            item = llama.cache[prompt] if llama.cache is not None else None
        except KeyError:
            item = None
        if item is not None and llama_cpp.Llama.longest_token_prefix(item.input_ids.tolist(), prompt) > have:
            llama.load_state(item)
            have = llama_cpp.Llama.longest_token_prefix(llama._input_ids.tolist(), prompt)
        llama.n_tokens = min(have, len(prompt) - 1)
        return int(llama.n_tokens)

    def warm(self, messages: Sequence[Message], schema: dict[str, Any] | None = None) -> str:
        """Do ahead of a chat that starts like ``messages`` (under ``schema``) the work its first call would
        do once, generating nothing: load the model, compile the constraint, and put the evaluated state of
        the system prompt into this process's memory (read from the disk cache, or evaluated and saved
        there). Returns what happened to that state: "disk", "memory", "evaluated", "failed", or "" when
        there is none to keep (no system message, a short one, or the caches off)."""
        with self._lock:
            self.constraint(schema)
            try:
                return self._load_prefix(messages)
            finally:
                self._llama.reset()

    # --- the system prompt's evaluated state, kept in this process and on disk ---

    def prefix_text(self, messages: Sequence[Message]) -> str | None:
        """The text the chat template writes for the system message alone, which every chat starting
        with that message starts with; None without a system message or when the template does not
        render it as a prefix."""
        if not messages or messages[0].get("role") != "system":
            return None
        return self._rendered_prefix(messages[:1])

    def kept_text(self, messages: Sequence[Message]) -> str | None:
        """The text the chat template writes for the messages up to the last one marked :data:`KEEP` after
        the system message (the planner's worked examples, when they come back for other requests), which
        the chat starts with; None when no such message is marked (or the template does not render them as a
        prefix)."""
        if not messages or messages[0].get("role") != "system":
            return None
        marked = [i for i, m in enumerate(messages) if i > 0 and m.get(KEEP)]
        if not marked or marked[-1] >= len(messages) - 1:
            return None
        return self._rendered_prefix(messages[: marked[-1] + 1])

    def _rendered_prefix(self, first: Sequence[Message]) -> str | None:
        """The template's text of ``first``, when a chat going on after them starts with it."""
        if self._formatter is None:
            self._formatter = self._template_formatter(generation_prompt=False)
        if not self._formatter:
            return None
        first = plain(first)
        try:
            prefix = self._formatter(messages=first).prompt
            whole = self._formatter(messages=[*first, {"role": "user", "content": "?"}]).prompt
        except Exception:  # a template that refuses this shape (jinja raise_exception): no prefix state
            return None
        return prefix if prefix and whole.startswith(prefix) else None

    def _state_settings(self) -> dict[str, Any]:
        """What, besides the model and the text, an evaluated state depends on: its layout (flash attention
        stores the V cache untransposed; the cache types) and its numbers (the batch sizes split the
        evaluation differently, which may change the last bits of the KV cache)."""
        params = self._llama.context_params
        return {"n_ctx": self.n_ctx, "flash_attn": self.flash_attn, "n_gpu_layers": self.n_gpu_layers,
                "type_k": int(params.type_k), "type_v": int(params.type_v),
                "n_batch": int(params.n_batch), "n_ubatch": int(params.n_ubatch)}

    def _load_prefix(self, messages: Sequence[Message]) -> str:
        """Put the evaluated state of the chat's system prompt into the context before the call, from
        this process's memory, from the disk cache, or by evaluating it (and saving it); when the chat marks
        a longer prefix (:meth:`kept_text`), that prefix's state from the disk cache ("kept"), or, when it is
        not there, the system prompt's with the rest of the prefix evaluated on top and saved. Only a prefix
        of the prompt's tokens is ever loaded, and llama.cpp keeps only as much of it as matches the real
        prompt. A call that finds a state and one that makes it read the prompt cut at the same points, so
        a request's reply does not depend on what the disk held (a marked prefix's reply may differ from
        the reply with no marked prefix where the prompt past the system prompt is longer than a batch:
        :meth:`_load_kept`). What happened, for the counters."""
        if self.prompt_state is None and self.prompt_cache_mb <= 0:
            return ""
        system = self._system_prefix(messages)
        kept = self._load_kept(messages, system)
        if kept == "kept":
            return kept
        how = self._load_system(*system) if system is not None else ""
        if kept is not None:
            self._save_kept(*kept)
        return how

    def _system_prefix(self, messages: Sequence[Message]) -> tuple[str, list[int]] | None:
        """The system prompt's text (:meth:`prefix_text`) and tokens, when it is long enough to keep a state of
        and fits the context; else None."""
        text = self.prefix_text(messages)
        if text is None:
            return None
        tokens = list(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))
        if len(tokens) < PREFIX_MIN_TOKENS or len(tokens) >= self.n_ctx:
            return None
        return text, tokens

    def _load_kept(self, messages: Sequence[Message], system: tuple[str, list[int]] | None) -> Any:
        """The longer prefix a chat marks (:meth:`kept_text`) from the disk cache: "kept" when its state is
        loaded into the context; else, when there is one, its (tokens, start, key) for :meth:`_save_kept` to save
        once the system prompt's state is in the context; None when the chat marks none. Such states are kept
        on disk only (there may be one per worked-example set; read back from the page cache and checked, ~70 ms
        for Qwen), not in this process's memory.

        The state holds the marked prefix's tokens up to a multiple of :data:`KEEP_ALIGN` past the system
        prompt's (evaluated after the system prompt's state, in one batch where it fits one), not its last
        few: llama.cpp's CPU kernels take a batch's rows in groups, so a row's numbers depend on where its
        batch starts modulo the group. Cut so, the kept rows are bit for bit those a call evaluating
        everything after the system prompt in one batch makes, and so are the rows evaluated after them:
        where the prompt after the system prompt is one batch, the reply is the same as without the state
        (measured). Where it is longer, read without the state in batches cut elsewhere, the numbers may
        differ from those (one TaskBench reply of four did), but never between calls: the call that saves
        the state has read the prompt cut at the same point (:meth:`_save_kept`), so a request gets the
        same reply whether the state was on disk or not."""
        text = self.kept_text(messages)
        if text is None or self.prompt_state is None or not self._aligned_batches():
            return None
        tokens = list(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))
        start = 0 if system is None else len(system[1])  # no system state: the prompt is read from its start
        if system is not None and tokens[:start] != system[1]:
            return None  # the system state would be loaded and cut short: no aligned point to keep
        end = start + (len(tokens) - start) // KEEP_ALIGN * KEEP_ALIGN
        if end - start < KEEP_ALIGN or end >= self.n_ctx:
            return None
        tokens = tokens[:end]
        if (self._prompt_tokens(messages) or [])[:end] != tokens:
            return None  # the whole prompt splits the text at the cut otherwise: the state would be cut short
        key = state_key(self._identity(), text, self._state_settings())
        saved = self._disk_state(key, tokens)
        if saved is not None:
            try:
                self._llama.load_state(self._state_of(saved))
                return "kept"
            except RuntimeError as exc:
                self._drop_state(key, exc)
        return tokens, start, key

    def _aligned_batches(self) -> bool:
        """Whether a prefix state cut at :data:`KEEP_ALIGN` tokens gives the numbers of a full evaluation: on
        the CPU (measured there; a GPU's kernels batch otherwise), with batch sizes that are multiples of it."""
        import llama_cpp

        on_cpu = self.n_gpu_layers == 0 or not llama_cpp.llama_supports_gpu_offload()
        return on_cpu and self.n_batch % KEEP_ALIGN == 0 and self.n_ubatch % KEEP_ALIGN == 0

    def _save_kept(self, tokens: list[int], start: int, key: str) -> None:
        """Evaluate the marked prefix's ``tokens`` past the first ``start`` (the system prompt's, whose state the
        context holds; 0: none; in batches of ``n_batch`` from there), and save the state on disk under ``key``;
        the context then holds those tokens."""
        assert self.prompt_state is not None
        if start == 0:
            self._llama.reset()
        self._llama.n_tokens = start
        self._llama.eval(tokens[start:])
        self.prompt_state.save(key, self._snapshot(tokens))

    def _disk_state(self, key: str, tokens: list[int]) -> SavedState | None:
        """The state saved on disk under ``key`` when it holds exactly ``tokens``; a file holding others is
        not trusted (one log line; the caller's save replaces it)."""
        saved = self.prompt_state.load(key) if self.prompt_state is not None else None
        if saved is not None and saved.tokens != tokens:
            log.warning("prompt state %s holds other tokens than its prompt; it will be rebuilt", key[:12])
            return None
        return saved

    def _drop_state(self, key: str, exc: RuntimeError) -> None:
        """Forget a state llama.cpp refused (in memory and on disk), with one log line, and empty the context."""
        log.warning("prompt state %s could not be loaded (%s); evaluating the prompt", key[:12], exc)
        self._prefixes.pop(key, None)
        if self.prompt_state is not None:
            self.prompt_state.path(key).unlink(missing_ok=True)
        self._llama.reset()

    def _snapshot(self, tokens: list[int]) -> SavedState:
        """The context's state, holding ``tokens``, as saved."""
        return SavedState(tokens=list(tokens), state=self._context_bytes(), seed=int(self._llama._seed))

    def _load_system(self, text: str, tokens: list[int]) -> str:
        """:meth:`_load_prefix` for the system message's state (its :meth:`_system_prefix`)."""
        key = state_key(self._identity(), text, self._state_settings())
        how = "memory"
        state = self._prefixes.get(key)
        if state is None:
            saved = self._disk_state(key, tokens)
            how = "disk" if saved is not None else "evaluated"
            state = self._state_of(saved) if saved is not None else None
            if state is None:
                self._llama.reset()
                self._llama.eval(tokens)
                saved = self._snapshot(tokens)
                state = self._state_of(saved)
                if self.prompt_state is not None:
                    self.prompt_state.save(key, saved)
            self._prefixes[key] = state
            while len(self._prefixes) > 4:
                self._prefixes.popitem(last=False)
        else:
            self._prefixes.move_to_end(key)
            if self.prompt_state is not None:  # in use: the disk's least recently used go before it
                self.prompt_state.touch(key)
        try:
            self._llama.load_state(state)
        except RuntimeError as exc:  # a state this build cannot take: drop it, evaluate the system prompt as
            self._drop_state(key, exc)  # a call that finds none does, so the rest is read from the same point
            self._llama.eval(tokens)
            return "failed"
        return how

    def _context_bytes(self) -> bytes:
        return context_bytes(self._llama._ctx.ctx)

    def _state_of(self, saved: SavedState) -> Any:
        """A llama_cpp state from a saved one (the token array padded to the context, one zero logits row:
        the call evaluates at least one token after the prefix, which writes the logits it samples from)."""
        import llama_cpp
        import numpy as np

        ids = np.zeros(self.n_ctx, dtype=np.intc)
        ids[: len(saved.tokens)] = saved.tokens
        scores = np.zeros((1, self._llama.n_vocab()), dtype=np.single)
        return llama_cpp.LlamaState(input_ids=ids, scores=scores, n_tokens=len(saved.tokens),
                                    llama_state=saved.state, llama_state_size=len(saved.state), seed=saved.seed)

    def _identity(self) -> str:
        identity: str | None = getattr(self, "_identity_value", None)
        if identity is None:
            identity = self._identity_value = model_identity(self.path)
        return identity

    def _perf_reset(self) -> None:
        """Zero llama.cpp's counters for the coming call."""
        import llama_cpp

        llama_cpp.llama_perf_context_reset(self._llama._ctx.ctx)

    def _perf_prompt_tokens(self) -> int:
        """Prompt tokens llama.cpp evaluated in the last call (fewer than the prompt on a cache hit)."""
        import llama_cpp

        return int(llama_cpp.llama_perf_context(self._llama._ctx.ctx).n_p_eval)

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` in this model's vocabulary."""
        with self._lock:
            self._ensure_loaded()
            return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def close(self) -> None:
        """Free the model."""
        with self._lock:
            self._generators.clear()
            self._grammars.clear()
            self._llg_tokenizer = None
            self._prefixes.clear()
            self._formatter = self._chat_formatter = None
            if self._llama is not None:
                self._llama.close()
            self._llama = None
            self._model = None


class NgramIndex:
    """Where each short run of tokens last occurred in a growing token list, for drafting by prompt lookup:
    a plan copies spans of its prompt (file names, quoted text, a demo's keys and task names)."""

    SIZES = (3, 2)  # the runs looked up, longest first

    def __init__(self, tokens: Sequence[int] = ()) -> None:
        self.tokens: list[int] = []
        self._next: dict[tuple[int, ...], int] = {}  # a run -> the position after its latest occurrence
        self.extend(tokens)

    def extend(self, tokens: Sequence[int]) -> None:
        """Append ``tokens``, indexing the runs that now end before the last token (the run ending at the
        last token is what :meth:`draft` looks up, so it is indexed once a token follows it)."""
        for token in tokens:
            self.tokens.append(token)
            end = len(self.tokens) - 1
            for n in self.SIZES:
                if end >= n:
                    self._next[tuple(self.tokens[end - n:end])] = end

    def draft(self, limit: int) -> list[int]:
        """Up to ``limit`` tokens that followed the latest earlier occurrence of the list's last 3 tokens, else
        of its last 2; none when neither occurred before."""
        for n in self.SIZES:
            if len(self.tokens) > n:
                at = self._next.get(tuple(self.tokens[-n:]))
                if at is not None:
                    return self.tokens[at:at + limit]
        return []

