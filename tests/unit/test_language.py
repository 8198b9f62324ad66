"""Language detection, tokens for every script, quotation marks of every kind, and the lexicons."""

from __future__ import annotations

import pytest

from localgpt.planning.demos import DEMOS
from localgpt.planning.language import LEXICONS, NONE, detect, lexicon
from localgpt.planning.passes import make_context
from localgpt.planning.planner import Planner, PlannerOptions, min_steps
from localgpt.planning.quotes import outside_quotes, quoted_passages
from localgpt.planning.retrieval import tokens, word_overlap
from localgpt.testing import FakeLLM


@pytest.mark.parametrize(("request_text", "code"), [
    ("Describe photo.jpg and read the description aloud", "en"),
    ("Beschreibe foto.jpg und lies die Beschreibung vor", "de"),
    ("Décris la photo plage.jpg puis traduis la description en anglais", "fr"),
    ("Describe la foto playa.jpg y luego tradúcela al inglés", "es"),
    ("Descreva a foto praia.jpg e traduza a descrição para o inglês", "pt"),
    ("把 meeting_0915.wav 转成文字", "zh"),
    ("この写真 cat.jpg を説明してください", "ja"),
    ("会議.wav を文字起こしして", "ja"),  # kanji with kana: Japanese
    ("صف الصورة souq.jpg ثم ترجم الوصف", "ar"),
    ("이 사진 photo.jpg 를 설명해 주세요", "ko"),
    ("Опиши фото cat.jpg", "ru"),
    ("इस फोटो photo.jpg का वर्णन करो", "hi"),
])
def test_detect_reads_the_script_then_the_common_words(request_text: str, code: str) -> None:
    assert detect(request_text) == code


def test_detect_ignores_file_names_and_quotes_in_another_language() -> None:
    assert detect("把 very_long_english_file_name_of_the_meeting.wav 转成文字") == "zh"
    assert detect("Übersetze „Where is the station and how do I get there?“ ins Deutsche bitte") == "de"
    assert detect("ok") == "en"  # nothing decides: English


def test_tokens_split_words_of_every_script_and_bigrams_where_words_are_not_spaced() -> None:
    assert tokens("Describe PHOTO.jpg, please!") == {"describe", "<image>", "please"}  # a file is its kind
    assert tokens("Übersetze Straße_2 und notes.txt") == {"übersetze", "strasse", "2", "und", "notes", "txt"}
    assert tokens("描述这张照片") == {"描述", "述这", "这张", "张照", "照片"}
    assert tokens("写真を説明") == {"写真", "真を", "を説", "説明"}
    assert tokens("猫") == {"猫"}
    assert tokens("صف الصورة") == {"صف", "الصورة"}


def test_word_overlap_scores_cjk_requests_against_cjk_demos() -> None:
    scores = word_overlap("画一只在草地上睡觉的狐狸", ["画一只在雪地里奔跑的狐狸", "Draw a fox", "Tell me a joke."])
    assert scores[0] > 0 and scores[1] == scores[2] == 0
    # the planner shows a Chinese request the Chinese demos closest to it, not the first demos of the list
    # (with the prompt demos for requests not in English off: by default it gets those instead)
    chosen = Planner(FakeLLM(), n_demos=1, options=PlannerOptions(other_language_demos=0)).choose_demos(
        "请画一只在雪地里睡觉的狐狸")
    assert chosen[0].request == "画一只在雪地里奔跑的狐狸" and chosen[0] is not DEMOS[0]


@pytest.mark.parametrize(("request_text", "quoted"), [
    ("Read “good morning” aloud", "good morning"),
    ("Lies „Der Zug fällt aus.“ vor", "Der Zug fällt aus."),
    ("Lis « bonjour à tous » à voix haute", " bonjour à tous "),
    ("Lis ‹ salut › vite", " salut "),
    ("把「你好世界」翻译成英文", "你好世界"),
    ("『吾輩は猫である』を要約して", "吾輩は猫である"),
    ("תרגם ״שלום לכולם״ לאנגלית", "שלום לכולם"),
    ("Say ‘see you soon’ please", "see you soon"),
])
def test_every_kind_of_quote_is_read_in_both_readings(request_text: str, quoted: str) -> None:
    assert [q.text for q in quoted_passages(request_text)] == [quoted]
    assert [q.text for q in quoted_passages(request_text, bounded=True)] == [quoted]
    assert quoted not in outside_quotes(request_text)


def test_every_lexicon_loads_with_the_same_interface() -> None:
    for code in LEXICONS:
        words = lexicon(code)
        assert words.code == code and words.chain and words.actions and words.tasks and words.common
    assert lexicon("th") is NONE and not NONE.evidence("อะไรก็ได้") and NONE.chain_words("แล้ว แล้ว") == 0


def test_a_lexicon_matches_whole_words_stems_and_unspaced_scripts() -> None:
    en = lexicon("en")
    assert en.found("answer the form", ["form"]) == ["form"]
    assert en.found("what format is it", ["form"]) == []  # a whole word, not a part
    assert en.found("the described scene", ["describ*"]) == ["describ*"]  # a stem
    assert "image-to-text" in lexicon("zh").evidence("描述这张照片")
    assert "document-question-answering" in lexicon("ja").evidence("この請求書の合計は？")
    assert "document-question-answering" not in en.evidence("is there any wine on the table?")  # a dining table
    assert lexicon("de").made("Erstelle ein Bild von einem Hund") == {"image"}
    assert lexicon("en").made("make the audio clearer") == set()  # a change, not a new recording
    assert lexicon("zh").made("生成一张猫的图片") == {"image"}


@pytest.mark.parametrize(("request_text", "kinds"), [
    ("冗談を一つ言って、それから猫の画像を作って", {"image"}),  # the verb after its noun
    ("この画像を描写して", set()),  # 描写 describes, it draws nothing
    ("농담 하나 해 주고 고양이 그림도 그려 줘", {"image"}),
    ("사진 cafe.jpg 설명해 줘", set()),
    ("एक चुटकुला सुनाओ और एक हाथी की तस्वीर बनाओ", {"image"}),
    ("इस तस्वीर का वर्णन करो", set()),
    ("Расскажи анекдот и создай видео, как кот играет на пианино", {"video"}),
    ("Опиши картинку dacha.jpg", set()),
    # words that look like makers and are not: 그리고 ("and"), 作者 ("author"), 動作 ("movement"),
    # "хочу"/"нужно" ("I want"/"I need": Russian has no article to tell a thing from an act)
    ("이 사진을 설명하고 그리고 번역해 줘", set()),
    ("この画像の作者は誰", set()),
    ("この動画の人物の動作を分類して", set()),
    ("Мне нужно описание картинки", set()),
    ("Хочу узнать, что на фото", set()),
    ("Сделай описание фото", set()),
    ("猫の絵を描き、説明して", {"image"}),
])
def test_made_reads_the_verb_after_its_noun_where_the_verb_comes_last(request_text: str, kinds: set[str]) -> None:
    assert lexicon(detect(request_text)).made(request_text) == kinds


def test_korean_and_hindi_match_inside_words_and_any_form_of_a_letter() -> None:
    ko, hi = lexicon("ko"), lexicon("hi")
    assert not ko.spaced and not hi.spaced
    assert "text-to-speech" in ko.evidence("“오늘 회의는 취소되었습니다”를 읽어 줘")  # 읽어 inside the words
    assert "document-question-answering" in ko.evidence("영수증.jpg의 합계가 얼마야?")
    decomposed, precomposed = "ज़ोर से पढ़ो", "\u095bोर से पढ़ो"  # the nukta as a mark, and as one letter
    assert decomposed != precomposed
    assert "text-to-speech" in hi.evidence(decomposed) and "text-to-speech" in hi.evidence(precomposed)
    assert "document-question-answering" not in hi.evidence("बिल्ली की फोटो का वर्णन करो")  # a cat, not a bill
    assert "image-to-text" not in lexicon("ru").evidence("Переведи текст на английский")  # "на": into English


def test_a_lexicon_runs_only_for_its_language() -> None:
    # "beschreib" is German evidence for a description; an English request holding it finds nothing
    assert "image-to-text" in make_context("Beschreibe foto.jpg bitte", ["foto.jpg"]).asked
    assert "image-to-text" not in make_context("What is beschreibe in foto.jpg?", ["foto.jpg"]).asked


@pytest.mark.parametrize("request_text", [
    "Transcribe a.wav, then summarize it and then read it aloud",
    "Transkribiere a.wav, dann fasse es zusammen und lies es danach vor",
    "Transcris a.wav, puis résume-le et ensuite lis-le",
    "Transcribe a.wav, luego resúmelo y después léelo en voz alta",
    "把 a.wav 转成文字，然后总结一下，最后读出来",
    "a.wav を文字起こしして、それから要約して、最後に読み上げて",
    "فرغ a.wav ثم لخصه ثم اقرأه",
    "Расшифруй a.wav, потом кратко перескажи и затем прочитай вслух",
    "a.wav를 받아쓰고 그 다음 요약하고 마지막으로 읽어 줘",
    "a.wav को लिखित में बदलो, फिर सारांश बनाओ और अंत में ज़ोर से पढ़ो",
])
def test_the_step_floor_reads_chains_in_every_lexicon(request_text: str) -> None:
    assert min_steps(request_text) == 2


def test_an_absent_word_never_raises_the_floor() -> None:
    assert min_steps("ถอดเสียง a.wav แล้วสรุป แล้วอ่านออกเสียง") == 1  # Thai: no lexicon, no evidence
    assert min_steps("Переведи «потом, затем и наконец» на английский") == 1  # quoted words are data
    assert min_steps("Say 'then and then and then' aloud") == 1  # quoted words are data
    assert min_steps("Transcribe a.wav") == 1


def test_a_file_name_ends_where_its_extension_does_before_a_particle() -> None:
    from localgpt.planning.validate import named_files

    assert named_files("img1.jpg랑 img2.jpg에 뭐가 있는지 설명해 줘") == ["img1.jpg", "img2.jpg"]
    assert named_files("会議 kaigi.wavを文字起こしして") == ["kaigi.wav"]
    assert named_files("see photo.jpg, then report_v2.txt_old") == ["photo.jpg"]  # an underscore goes on the name
    assert detect("img1.jpg랑 img2.jpg에 뭐가 있는지 설명해 줘") == "ko"
