"""The language a request is written in, and the lexicon of that language (see docs/planning.md).

The language is read from the script first (Han without kana is Chinese, kana is Japanese, Hangul
Korean, Arabic letters Arabic, ...); file names and quoted passages are left out, since they are
often in another language than the request around them. Latin-script requests are told apart by the
common words of each lexicon (and a few letters only one of them uses); English when nothing decides.
"""

from __future__ import annotations

import importlib
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache

from localgpt.planning.quotes import outside_quotes

# Languages with a lexicon module (localgpt/planning/lexicon/<code>.py).
LEXICONS = ("en", "de", "fr", "es", "pt", "zh", "ja", "ar", "ru", "ko", "hi")
_FILE = re.compile(r"[\w./\\~-]+\.[A-Za-z0-9]{2,5}(?![A-Za-z0-9_])")  # as validate._FILE_WORD
_WORD = re.compile(r"[^\W\d_]+")


@dataclass(frozen=True)
class Lexicon:
    """The words of one language that are evidence for the planner. Each entry is a word or phrase;
    in a language that spaces its words it matches whole words (an entry ending in ``*`` matches a word
    that starts with it: ``describ*``), elsewhere (Chinese, Japanese, Arabic) anywhere in the text.

    - ``common``: frequent words, only used to tell Latin-script languages apart;
    - ``chain``: words that chain actions ("then", "dann", "然后");
    - ``actions``: words naming an action or what it makes (each matched as a word start);
    - ``tasks``: for some task types, words that are evidence the request asks for that type;
    - ``original``: words by which a request speaks of the user's own file, not of what was made of it;
    - ``picture``: words naming an image or a scanned document;
    - ``makers`` and ``media``: verbs of making, and for each media kind (``image``, ``video``,
      ``audio``) the nouns naming it: a maker a few words before such a noun asks for one to be made
      (after it, in a language whose verb comes last: ``verb_last``, as in Japanese, Korean and Hindi).

    Texts and entries are compared in Unicode NFC, so a letter written precomposed or with a combining
    mark (Devanagari's nukta: "ज़" either way) matches itself.
    """

    code: str
    common: tuple[str, ...] = ()
    chain: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    tasks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    original: tuple[str, ...] = ()
    picture: tuple[str, ...] = ()
    makers: tuple[str, ...] = ()
    media: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    verb_last: bool = False

    @property
    def spaced(self) -> bool:
        """Whether matching goes by whole words: not in a language that does not space its words (Chinese,
        Japanese) nor in one that joins particles or clitics to them (Arabic, Korean, Hindi's postpositions
        and inflected verbs), where an entry matches anywhere."""
        return self.code not in ("zh", "ja", "ar", "ko", "hi")

    def found(self, text: str, entries: Iterable[str], *, prefix: bool = False) -> list[str]:
        """The entries that occur in ``text`` (each once, in the order given); with ``prefix``, every
        entry matches as the start of a word."""
        text = _fold(text)
        return [e for e in dict.fromkeys(entries) if _matcher(e, self.spaced, prefix).search(text)]

    def chain_words(self, text: str) -> int:
        """How many times words that chain actions occur in ``text``."""
        text = _fold(text)
        return sum(len(_matcher(e, self.spaced, False).findall(text)) for e in dict.fromkeys(self.chain))

    def evidence(self, text: str) -> set[str]:
        """The task types ``text`` holds a word for."""
        return {task for task, words in self.tasks.items() if self.found(text, words)}

    def made(self, text: str) -> set[str]:
        """The media kinds ``text`` asks to be made: a verb of making followed, within three words (eight
        characters where words are not spaced), by a noun of that kind ("generate a new image",
        "画一张图片", "erstelle ein Bild"); in a ``verb_last`` language also such a noun followed by the
        verb ("猫の画像を作って", "고양이 그림도 그려 줘", "हाथी की तस्वीर बनाओ")."""
        text = _fold(text)
        if not self.makers:
            return set()
        verbs = "|".join(re.escape(_fold(m.rstrip("*"))) for m in self.makers)
        kinds = set()
        for kind, nouns in self.media.items():
            names = "|".join(re.escape(_fold(n)) for n in nouns)
            if self.spaced:
                patterns = [rf"(?<![^\W_])(?:{verbs})[^\W_]*\s+(?:[^\s]+\s+){{0,3}}?(?:{names})"]
                if self.verb_last:
                    patterns.append(rf"(?:{names})[^\s]*\s+(?:[^\s]+\s+){{0,3}}?(?:{verbs})")
            else:
                patterns = [rf"(?:{verbs}).{{0,8}}?(?:{names})"]
                if self.verb_last:
                    patterns.append(rf"(?:{names}).{{0,8}}?(?:{verbs})")
            if any(re.search(p, text) for p in patterns):
                kinds.add(kind)
        return kinds


def _fold(text: str) -> str:
    """``text`` as lexicons compare it: case-folded, in Unicode NFC."""
    return unicodedata.normalize("NFC", text.casefold())


@cache
def _matcher(entry: str, spaced: bool, prefix: bool) -> re.Pattern[str]:
    word = _fold(entry.rstrip("*"))
    if not spaced:
        return re.compile(re.escape(word))
    end = "" if prefix or entry.endswith("*") else r"(?![^\W_])"
    return re.compile(r"(?<![^\W_])" + re.escape(word) + end)


NONE = Lexicon("und")  # the lexicon of a language without one: it finds nothing


@cache
def lexicon(code: str) -> Lexicon:
    """The lexicon of language ``code``; :data:`NONE` (no words) for a language without one."""
    if code not in LEXICONS:
        return NONE
    module = importlib.import_module(f"localgpt.planning.lexicon.{code}")
    found: Lexicon = module.LEXICON
    return found


# Scripts by the start of their Unicode character names, and the language each one stands for.
_SCRIPTS = (("HIRAGANA", "ja"), ("KATAKANA", "ja"), ("HANGUL", "ko"), ("CJK", "zh"), ("ARABIC", "ar"),
            ("DEVANAGARI", "hi"), ("CYRILLIC", "ru"), ("HEBREW", "he"), ("GREEK", "el"), ("THAI", "th"))
# Letters that only one of the Latin-script lexicons' languages uses.
_LETTERS = {"ã": "pt", "õ": "pt", "ß": "de", "ä": "de", "ö": "de", "ü": "de", "ñ": "es", "¿": "es", "¡": "es",
            "ç": "fr", "è": "fr", "ê": "fr", "à": "fr", "œ": "fr", "ù": "fr", "û": "fr", "â": "fr", "î": "fr",
            "ô": "fr"}


def _script(ch: str) -> str | None:
    name = unicodedata.name(ch, "")
    return next((code for prefix, code in _SCRIPTS if name.startswith(prefix)), None)


def detect(request: str) -> str:
    """The language ``request`` is written in, as a two-letter code (``en``, ``zh``, ``de``, ...).

    Example::

        detect("Beschreibe foto.jpg und lies es vor")  # 'de'
        detect("把 meeting.wav 转成文字")                  # 'zh'
    """
    text = _FILE.sub(" ", outside_quotes(request))
    letters = [ch for ch in text if ch.isalpha()]
    counts: dict[str, int] = {}
    for ch in letters:
        code = _script(ch)
        if code is not None:
            counts[code] = counts.get(code, 0) + 1
    if counts:
        if "ja" in counts:  # kana: Japanese, whatever share of it is kanji
            return "ja"
        best = max(counts, key=counts.__getitem__)
        if counts[best] >= 2 or counts[best] * 5 >= len(letters):
            return best
    words = _WORD.findall(text.casefold())
    scores = {code: 0.0 for code in ("en", "de", "fr", "es", "pt")}
    for code in scores:
        common = set(lexicon(code).common)
        scores[code] = sum(w in common for w in words)
    for ch in text.casefold():
        if ch in _LETTERS:
            scores[_LETTERS[ch]] += 0.5
    best = max(scores, key=lambda c: (scores[c], c == "en"))
    return best if scores[best] > 0 else "en"
