"""What each LLM engine accepts for the output constraint, and the plan schema rewritten into that form.

localgpt's schemas (the plan, the selector's choice) are standard JSON Schema. Engines turn a schema into a
decoding constraint in different ways:

* **llama.cpp** (its C++ ``llama-server``, ``llama-cpp-python``'s server, and Ollama, which embeds llama.cpp)
  converts the schema to a GBNF grammar. That converter reads a subset of JSON Schema: ``prefixItems`` is
  always a tuple of exactly its length (``minItems`` is not read), ``items: false`` is not understood, a
  ``pattern`` must be anchored with ``^...$``, ``minLength``/``maxLength`` are ignored beside a pattern, a
  pattern's characters are written into the JSON string raw (a ``[^<]`` class lets a bare ``"`` end the
  string early) and GBNF has no ``\\w``. :func:`for_gbnf` rewrites a schema into an equivalent or narrower
  one inside that subset (for Ollama, which takes only a schema); :class:`GBNF` writes the grammar itself
  (for the two servers, which take a ``grammar``), with the task list as one nested rule.
* **vLLM** (xgrammar, guidance or outlines behind ``response_format``) reads standard JSON Schema: the schema
  goes as it is.

The request field differs too (:func:`constraint_fields`): llama.cpp's servers get ``grammar``; vLLM the
OpenAI form ``{"type": "json_schema", "json_schema": {...}}``; Ollama's native API ``format: <schema>``
(llama-cpp-python's server, given a schema, would read only ``{"type": "json_object", "schema": ...}``).
"""

from __future__ import annotations

import copy
import json
import re
import unicodedata
from functools import lru_cache
from typing import Any

# The engines localgpt knows, by the name the setting takes (``LOCALGPT_ENGINE``).
ENGINES = ("llama.cpp", "llama-cpp-python", "vllm", "ollama", "openai")
GBNF_ENGINES = frozenset({"llama.cpp", "llama-cpp-python", "ollama"})
GRAMMAR_ENGINES = frozenset({"llama.cpp", "llama-cpp-python"})  # those that also take a GBNF grammar itself

# One character of a JSON string as the grammar writes it: any character but the quote, the backslash and
# the control characters, or a short escape (each decodes to one character, so lengths still hold).
_JSON_UNSAFE = '"\\\\\\x00-\\x1f'
_PLAIN_PUNCTUATION = frozenset(".()+*?{}|$/~@&:,=!#%'<>;`")
SAFE_CHAR = f'([^{_JSON_UNSAFE}]|\\\\["\\\\/bfnrt])'

# Scripts whose word characters a ``\w`` in a pattern stands for, beside ASCII (a GBNF class lists them).
_WORD_BLOCKS = (
    (0x00C0, 0x024F),  # Latin-1 letters, Latin Extended A and B
    (0x0370, 0x03FF),  # Greek
    (0x0400, 0x04FF),  # Cyrillic
    (0x0590, 0x05FF),  # Hebrew
    (0x0600, 0x06FF),  # Arabic
    (0x0900, 0x097F),  # Devanagari
    (0x0E00, 0x0E7F),  # Thai
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xAC00, 0xD7A3),  # Hangul syllables
)


@lru_cache(maxsize=1)
def word_class_body() -> str:
    """The inside of a character class of word characters: ASCII ``[A-Za-z0-9_]`` and the word characters
    (by Python's ``\\w``) of the common scripts, as ranges — a subset of ``\\w`` a GBNF grammar can hold."""
    runs: list[tuple[int, int]] = []
    for lo, hi in _WORD_BLOCKS:
        start = None
        for cp in range(lo, hi + 2):
            word = cp <= hi and re.fullmatch(r"\w", chr(cp)) is not None and unicodedata.category(chr(cp)) != "Mn"
            if word and start is None:
                start = cp
            elif not word and start is not None:
                runs.append((start, cp - 1))
                start = None
    parts = ["A-Za-z0-9_"]
    for lo, hi in runs:
        parts.append(chr(lo) if lo == hi else f"{chr(lo)}-{chr(hi)}")
    return "".join(parts)


def _rewrite_classes(pattern: str) -> str:
    """``pattern`` with each ``\\w`` inside a character class spelled out, each ``\\w`` outside one made a
    class, and each negated class kept off the JSON string's quote, backslash and control characters."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            escaped = pattern[i + 1]
            if escaped == "w":
                out.append(f"[{word_class_body()}]")
            elif escaped in _PLAIN_PUNCTUATION:  # GBNF literals know no "\." : a one-character class does
                out.append(f"[{escaped}]")
            else:
                out.append(pattern[i:i + 2])
            i += 2
        elif c == "[":
            j = i + 1
            body: list[str] = []
            while j < len(pattern) and pattern[j] != "]":
                if pattern[j] == "\\" and j + 1 < len(pattern):
                    body.append(word_class_body() if pattern[j + 1] == "w" else pattern[j:j + 2])
                    j += 2
                else:
                    body.append(pattern[j])
                    j += 1
            text = "".join(body)
            if text.startswith("^"):
                text += _JSON_UNSAFE
            out.append(f"[{text}]")
            i = j + 1
        elif c == ".":  # any character, as the grammar writes it: not one that breaks the JSON string
            out.append(f"[^{_JSON_UNSAFE}\\x7f]")
            i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _gbnf_string(schema: dict[str, Any]) -> dict[str, Any]:
    """A string schema with a pattern, rewritten for a GBNF converter (see the module's notes)."""
    pattern: str = schema["pattern"]
    low = int(schema.get("minLength", 0))
    high = schema.get("maxLength")
    out = {k: v for k, v in schema.items() if k not in ("pattern", "minLength", "maxLength")}
    anchored_end = pattern.endswith("$") and not pattern.endswith("\\$")
    head = re.fullmatch(r"\^(\[[^\]]*\])", pattern)
    label = re.fullmatch(r"\^([\w :]+)", pattern)  # a literal opening, as a plan's "Step N: "
    if (head or label) and not anchored_end:
        # "starts with one character of this class" or with these words, then free text: the length bounds
        # go into the pattern
        first = _rewrite_classes(head.group(1)) if head else label.group(1) if label else ""
        size = 1 if head else len(first)
        rest_low = max(low - size, 0)
        rest = f"{{{rest_low},{int(high) - size}}}" if high is not None else "*"
        out["pattern"] = f"^{first}{SAFE_CHAR}{rest}$"
        return out
    body = _rewrite_classes(pattern)
    if not body.startswith("^"):
        body = "^" + SAFE_CHAR + "*" + body
    if not anchored_end:
        body += SAFE_CHAR + "*$"
    out["pattern"] = body  # the length bounds, which the converter drops, stay for the local check only
    return out


def _gbnf_array(schema: dict[str, Any], defs: dict[str, Any], visit: Any, path: str) -> dict[str, Any]:
    """An array with ``prefixItems``: as many exact tuples (one per admitted length) as a GBNF converter
    reads them, their items shared through ``$defs`` so the grammar stays linear in the items."""
    items = schema["prefixItems"]
    low = int(schema.get("minItems", len(items)))
    high = int(schema.get("maxItems", len(items)))
    if high > len(items) and schema.get("items") not in (None, False):
        raise ValueError("prefixItems followed by further items is not supported for GBNF engines")
    high = min(high, len(items))  # (no "items": further ones are allowed; leaving them out only narrows)
    refs = []
    for k, item in enumerate(items[:high]):
        name = f"{path}-{k}"
        defs[name] = visit(item, name)
        refs.append({"$ref": f"#/$defs/{name}"})
    # (the converter reads a tuple as exactly its items; the bounds say the same to a JSON Schema validator)
    tuples = [{"type": "array", "prefixItems": refs[:n], "minItems": n, "maxItems": n}
              for n in range(max(low, 1), high + 1)]
    if low == 0:
        tuples.insert(0, {"type": "array", "maxItems": 0, "items": {"type": "null"}})
    return tuples[0] if len(tuples) == 1 else {"anyOf": tuples}


def for_gbnf(schema: dict[str, Any], *, tuples: bool = True) -> dict[str, Any]:
    """``schema`` rewritten into the part of JSON Schema llama.cpp's grammar converter reads faithfully.

    Every JSON value the rewritten schema admits is admitted by ``schema`` (patterns may be narrower:
    ``\\w`` covers the word characters of the common scripts, and string escapes are limited to the short
    ones). Example::

        gbnf_schema = for_gbnf(plan_schema())

    With ``tuples`` off, ``prefixItems`` arrays are left as they are (for :class:`GBNF`, which reads them).
    """
    defs: dict[str, Any] = {}
    strings: dict[str, str] = {}  # a string schema's JSON -> its name in $defs
    counter = {"n": 0}

    def visit(node: Any, path: str) -> Any:
        if isinstance(node, list):
            return [visit(v, f"{path}-{i}") for i, v in enumerate(node)]
        if not isinstance(node, dict):
            return node
        if "prefixItems" in node and tuples:
            counter["n"] += 1
            return _gbnf_array(node, defs, visit, f"tuple{counter['n']}")
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "properties":
                out[key] = {k: visit(v, f"{path}-{k}") for k, v in value.items()}
            elif key == "$defs":
                out[key] = {k: visit(v, k) for k, v in value.items()}
            elif key in ("anyOf", "oneOf", "allOf", "items", "additionalProperties", "prefixItems"):
                out[key] = visit(value, f"{path}-{key}") if value is not False else value
            else:
                out[key] = copy.deepcopy(value)
        if isinstance(out.get("pattern"), str):
            out = _gbnf_string(out)
        if out.get("type") == "string" and len(out) > 1:  # one rule per distinct string, shared by every use
            key = json.dumps(out, sort_keys=True)
            if key not in strings:
                strings[key] = f"string{len(strings)}"
                defs[strings[key]] = out
            return {"$ref": f"#/$defs/{strings[key]}"}
        return out

    rewritten = visit(schema, "root")
    if defs:
        rewritten = {**rewritten, "$defs": {**rewritten.get("$defs", {}), **defs}}
    return rewritten


def engine_schema(engine: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The schema as ``engine`` should receive it (:func:`for_gbnf` for the llama.cpp family)."""
    return for_gbnf(schema) if engine in GBNF_ENGINES else schema


def constraint_fields(engine: str, schema: dict[str, Any], name: str = "reply") -> dict[str, Any]:
    """The request fields that constrain ``engine``'s reply to ``schema`` (merged into the request body).

    Example::

        body.update(constraint_fields("vllm", plan_schema()))
    """
    if engine in GRAMMAR_ENGINES:
        try:
            return {"grammar": grammar_for(schema)}
        except ValueError:  # a schema beyond what GBNF() writes: the engine's own converter takes it
            pass
    sent = engine_schema(engine, schema)
    if engine == "llama-cpp-python":
        return {"response_format": {"type": "json_object", "schema": sent}}
    if engine == "ollama":
        return {"format": sent}
    return {"response_format": {"type": "json_schema",
                                "json_schema": {"name": name, "schema": sent, "strict": True}}}


@lru_cache(maxsize=32)
def _grammar_cached(key: str) -> str:
    return GBNF(json.loads(key)).text


def grammar_for(schema: dict[str, Any]) -> str:
    """The GBNF grammar of ``schema`` (:class:`GBNF`), cached per schema."""
    return _grammar_cached(json.dumps(schema))  # (key order kept: it is the order the reply is written in)


# What to check when an engine's reply breaks the schema, per engine.
FIX_HINTS = {
    "llama.cpp": "llama.cpp's server applies the request's 'grammar'; update it, or set LOCALGPT_ENGINE if the "
                 "engine at this address is another one",
    "llama-cpp-python": "llama-cpp-python's server applies the request's 'grammar' (0.2 and later); set "
                        "LOCALGPT_ENGINE to the engine at this address if it is another one",
    "vllm": "start vLLM with a structured-output backend (--guided-decoding-backend / --structured-outputs-config "
            "xgrammar or guidance), or set LOCALGPT_ENGINE to the engine it really is",
    "ollama": "Ollama reads a schema in 'format' since 0.5; update it, or set LOCALGPT_ENGINE to the engine it "
              "really is",
    "openai": "this engine was not recognised and ignored response_format json_schema; set LOCALGPT_ENGINE to "
              "llama.cpp, llama-cpp-python, vllm or ollama",
}


class GBNF:
    """A GBNF grammar written straight from a schema of the kind localgpt sends (objects with required
    properties, ``const``/``enum``, ``anyOf``, arrays with ``items`` or ``prefixItems`` and bounds, strings with
    bounds or a pattern, ``$ref`` into ``$defs``), for the engines that take a grammar (llama.cpp's and
    llama-cpp-python's servers: the ``grammar`` field).

    Unlike the engines' converter, a ``prefixItems`` array of 1 to N items is one nested rule
    (``[t0 ("," t1 ("," t2)?)?]``) instead of N alternative tuples: the grammar sampler then follows one
    stack where the converter's form makes it follow N at once. Patterns are made JSON-safe first
    (:func:`for_gbnf`). Example::

        grammar = GBNF(plan_schema()).text
    """

    def __init__(self, schema: dict[str, Any]) -> None:
        self.root = for_gbnf(schema, tuples=False)
        self.rules: dict[str, str] = {}
        self.names: dict[str, str] = {}  # a rule's body -> its name (identical bodies share one rule)
        self.rules["space"] = '" "?'
        self.rules["char"] = '[^"\\\\\\x00-\\x1f] | "\\\\" ["\\\\/bfnrt]'
        self.rules["root"] = self.visit(self.root, "plan")
        self.text = "\n".join(f"{name} ::= {body}" for name, body in self.rules.items()) + "\n"

    def rule(self, name: str, body: str) -> str:
        """A named rule for ``body`` (reused when the same body was named before)."""
        if body in self.names:
            return self.names[body]
        name = self.fresh(name)
        self.rules[name] = body
        self.names[body] = name
        return name

    def fresh(self, name: str) -> str:
        """A rule name like ``name`` not used yet."""
        name = re.sub(r"[^a-zA-Z0-9-]+", "-", name)
        base, n = name, 1
        while name in self.rules:
            n += 1
            name = f"{base}-{n}"
        return name

    @staticmethod
    def literal(value: Any) -> str:
        """A GBNF literal for a JSON value."""
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    def visit(self, node: Any, name: str) -> str:
        if node is True or node == {}:
            raise ValueError("an unconstrained value has no grammar here")
        if "$ref" in node:
            ref = node["$ref"].split("/")[-1]
            key = f"$ref:{ref}"
            if key not in self.names:
                name = self.fresh(ref)
                self.names[key] = name
                self.rules[name] = ""  # reserved first: a definition may refer to itself
                self.rules[name] = self.visit(self.root["$defs"][ref], ref + "-def")
            return self.names[key]
        if "const" in node:
            return self.rule(name, self.literal(node["const"]) + " space")
        if "enum" in node:
            return self.rule(name, "(" + " | ".join(self.literal(v) for v in node["enum"]) + ") space")
        if "anyOf" in node:
            return self.rule(name, " | ".join(self.visit(v, f"{name}-{i}") for i, v in enumerate(node["anyOf"])))
        kind = node.get("type")
        if kind == "object":
            props = node.get("properties", {})
            if node.get("additionalProperties", True) is not False:
                raise ValueError("only objects with a fixed set of properties")
            required = set(node.get("required", []))
            pairs = {k: f'{self.literal(k)} space ":" space {self.visit(v, f"{name}-{k}")}' for k, v in props.items()}
            must = [pairs[k] for k in props if k in required]  # the required ones in order, then each optional one
            may = [pairs[k] for k in props if k not in required]
            if must:
                body = ' "," space '.join(must) + "".join(f' ("," space {p})?' for p in may)
            elif may:  # whichever optional one comes first, then any of those after it
                firsts = [p + "".join(f' ("," space {q})?' for q in may[i + 1:]) for i, p in enumerate(may)]
                body = "(" + " | ".join(f"({f})" for f in firsts) + ")?"
            else:
                body = ""
            return self.rule(name, '"{" space ' + body + ' "}" space')
        if kind == "array":
            return self.rule(name, self._array(node, name))
        if kind == "string":
            if "pattern" in node:
                return self.rule(name, '"\\"" ' + _regex_to_gbnf(node["pattern"]) + ' "\\"" space')
            low, high = int(node.get("minLength", 0)), node.get("maxLength")
            return self.rule(name, f'"\\"" char{{{low},{"" if high is None else int(high)}}} "\\"" space')
        if kind == "integer":
            return self.rule(name, '"-"? [0-9]+ space')
        if kind == "boolean":
            return self.rule(name, '("true" | "false") space')
        raise ValueError(f"no grammar for {json.dumps(node)[:80]}")

    def _array(self, node: dict[str, Any], name: str) -> str:
        if "prefixItems" in node:
            items = [self.visit(v, f"{name}-{i}") for i, v in enumerate(node["prefixItems"])]
            high = min(int(node.get("maxItems", len(items))), len(items))
            items = items[:high]
            low = max(int(node.get("minItems", 0)), 0)
        else:
            item = self.visit(node["items"], f"{name}-item")
            low, high = int(node.get("minItems", 0)), int(node.get("maxItems", 0)) or None  # type: ignore[assignment]
            if high is None:
                body = f'{item} ("," space {item})*'
                return '"[" space ' + (body if low else f"({body})?") + ' "]" space'
            items = [item] * high
        body = ""
        for i in range(len(items) - 1, -1, -1):  # t0 ("," t1 ("," t2)?)? with the first `low` required
            sep = "" if i == 0 else '"," space '
            inner = f"{sep}{items[i]}" + (f" {body}" if body else "")
            body = inner if i < max(low, 1) or i == 0 and low else f"({inner})?"
        if low == 0:
            body = f"({body})?"
        return '"[" space ' + body + ' "]" space'


def _regex_to_gbnf(pattern: str) -> str:
    """A ``^...$`` regex of the JSON-safe kind :func:`for_gbnf` writes, as a GBNF expression."""
    if not (pattern.startswith("^") and pattern.endswith("$")):
        raise ValueError(f"pattern /{pattern}/ is not anchored")
    text = pattern[1:-1]
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "[":
            j = i + 1
            while text[j] != "]":
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif c in "()|":
            out.append(f" {c} ")
            i += 1
        elif c in "*+?":
            out.append(c)
            i += 1
        elif c == "{":
            j = text.index("}", i)
            out.append(text[i:j + 1])
            i = j + 1
        else:
            if c == "\\":
                c = text[i + 1]
                i += 1
            out.append('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"')
            i += 1
    return "(" + "".join(out) + ")"
