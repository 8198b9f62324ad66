"""Text and audio handlers of the transformers backend, on tiny random models built from config here.

Each model is built once per session (hidden sizes 16-32, one or two layers) with a tokenizer,
feature extractor or both made locally, saved with ``save_pretrained`` and run through
``TransformersExpert`` exactly as an installed card would be. The tests assert kinds, shapes,
files and the structure of the data, not the (random) predictions.
"""

from __future__ import annotations

import json
import wave
from pathlib import Path
from typing import Any

import pytest

from localgpt.config import Settings
from localgpt.errors import InputError
from localgpt.experts import expert_class
from localgpt.experts.base import ExpertContext
from localgpt.runtime.runs import RunDir
from localgpt.schema import ModelCard
from tests.helpers import missing

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "in", "park", "paris", "is", "capital", "of", "france",
         "who", "what", "where", "ada", "lovelace", "wrote", "notes", "london", "city", "name", "age", "income",
         "yes", "no", "high", "low", "alice", "bob", "35", "52", "1000", "2000"]
LABELS = {0: "negative", 1: "positive"}


# --- builders ---


def word_tokenizer(folder: Path, seq2seq: bool = False) -> None:
    """A word-level fast tokenizer over ``WORDS`` (BERT-style specials, or T5-style for seq2seq)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"] if seq2seq else ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {tok: i for i, tok in enumerate([*specials, *WORDS, "?", ".", ","])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=specials[2] if seq2seq else "[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if seq2seq:
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                           special_tokens=[("</s>", 1)])
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    else:
        tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                           special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                       sep_token="[SEP]", mask_token="[MASK]")
    fast.save_pretrained(folder)


def bert_config(**extra: Any) -> Any:
    from transformers import BertConfig

    return BertConfig(vocab_size=len(WORDS) + 8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=64, **extra)


def build_bert(folder: Path, head: str) -> None:
    """A tiny BERT with a token-classification, sequence-classification, QA or no head."""
    import torch
    import transformers

    torch.manual_seed(0)
    if head == "token":
        config = bert_config(id2label={0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC"})
        model = transformers.BertForTokenClassification(config)
    elif head == "sequence":
        model = transformers.BertForSequenceClassification(bert_config(id2label=LABELS))
    elif head == "nli":
        nli = {0: "entailment", 1: "neutral", 2: "contradiction"}
        model = transformers.BertForSequenceClassification(
            bert_config(id2label=nli, label2id={v: k for k, v in nli.items()}))
    elif head == "qa":
        model = transformers.BertForQuestionAnswering(bert_config())
    else:
        model = transformers.BertModel(bert_config())
    model.save_pretrained(folder)
    word_tokenizer(folder)


def build_t5(folder: Path) -> None:
    """A tiny T5 encoder-decoder."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(vocab_size=len(WORDS) + 6, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1,
                      num_heads=2, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    model = T5ForConditionalGeneration(config)
    model.generation_config.max_new_tokens = 8  # a random model rarely stops by itself
    model.save_pretrained(folder)
    word_tokenizer(folder, seq2seq=True)


def byte_level_vocab() -> list[str]:
    """The 256 byte-level BPE symbols (GPT-2's printable mapping of bytes)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = 0
    symbols = {}
    for b in range(256):
        if b in printable:
            symbols[b] = chr(b)
        else:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


WHISPER_SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>",
                    "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]


def build_whisper(folder: Path) -> None:
    """A tiny English-only Whisper with a byte-level tokenizer and the standard feature extractor."""
    import torch
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizerFast,
    )

    vocab = {s: i for i, s in enumerate(byte_level_vocab())}
    for special in WHISPER_SPECIALS:
        vocab[special] = len(vocab)
    (folder / "vocab.json").parent.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = WhisperTokenizerFast(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"),
                                     unk_token="<|endoftext|>", bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                     pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": WHISPER_SPECIALS[1:]})
    torch.manual_seed(0)
    sot, eot = vocab["<|startoftranscript|>"], vocab["<|endoftext|>"]
    config = WhisperConfig(vocab_size=len(vocab), d_model=16, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                           decoder_ffn_dim=32, max_target_positions=32, decoder_start_token_id=sot,
                           bos_token_id=eot, eos_token_id=eot, pad_token_id=eot)
    model = WhisperForConditionalGeneration(config)
    model.generation_config.suppress_tokens = []
    model.generation_config.begin_suppress_tokens = []
    model.generation_config.max_length = 12
    model.generation_config.no_timestamps_token_id = vocab["<|notimestamps|>"]
    model.generation_config.forced_decoder_ids = None
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    WhisperFeatureExtractor().save_pretrained(folder)


def build_vits(folder: Path) -> None:
    """A tiny VITS (MMS-style) text-to-speech model with a character tokenizer."""
    import torch
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    chars = ["<pad>", "<unk>", *" abcdefghijklmnopqrstuvwxyz.,"]
    (folder / "vocab.json").parent.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate(chars)}))
    VitsTokenizer(vocab_file=str(folder / "vocab.json"), phonemize=False, add_blank=True).save_pretrained(folder)
    torch.manual_seed(0)
    config = VitsConfig(vocab_size=len(chars), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        ffn_dim=32, flow_size=16, spectrogram_bins=33, upsample_initial_channel=16,
                        upsample_rates=[4, 4], upsample_kernel_sizes=[8, 8], resblock_kernel_sizes=[3],
                        resblock_dilation_sizes=[[1, 3]], prior_encoder_num_flows=1, prior_encoder_num_wavenet_layers=1,
                        posterior_encoder_num_wavenet_layers=1, duration_predictor_filter_channels=16,
                        duration_predictor_num_flows=1, depth_separable_num_layers=1, sampling_rate=8000)
    VitsModel(config).save_pretrained(folder)


def build_wav2vec2(folder: Path) -> None:
    """A tiny wav2vec2 audio classifier with the standard feature extractor."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

    torch.manual_seed(0)
    config = Wav2Vec2Config(vocab_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32, conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3),
                            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, classifier_proj_size=8,
                            id2label={0: "speech", 1: "music", 2: "noise"})
    Wav2Vec2ForSequenceClassification(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=16_000).save_pretrained(folder)


def build_speecht5_s2s(folder: Path) -> None:
    """A tiny SpeechT5 speech-to-speech model, its feature extractor and a tiny HiFi-GAN vocoder."""
    import numpy as np
    import torch
    from transformers import (
        SpeechT5Config,
        SpeechT5FeatureExtractor,
        SpeechT5ForSpeechToSpeech,
        SpeechT5HifiGan,
        SpeechT5HifiGanConfig,
    )

    torch.manual_seed(0)
    config = SpeechT5Config(vocab_size=16, hidden_size=16, encoder_layers=1, decoder_layers=1,
                            encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                            decoder_ffn_dim=32, conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3),
                            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                            speech_decoder_prenet_units=16, speech_decoder_postnet_units=16,
                            speech_decoder_postnet_layers=2, speaker_embedding_dim=8, num_mel_bins=16,
                            reduction_factor=2, max_speech_positions=600)
    SpeechT5ForSpeechToSpeech(config).save_pretrained(folder)
    SpeechT5FeatureExtractor(num_mel_bins=16).save_pretrained(folder)
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(model_in_dim=16, upsample_initial_channel=16,
                                                    upsample_rates=[4, 4], upsample_kernel_sizes=[8, 8],
                                                    resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1]]))
    vocoder.save_pretrained(folder / "vocoder")
    np.save(folder / "speaker.npy", np.linspace(-0.1, 0.1, 8, dtype=np.float32))


BUILDERS = {
    "ner": (lambda f: build_bert(f, "token"), "token-classification", ["token-classification"]),
    "cls": (lambda f: build_bert(f, "sequence"), "text-classification",
            ["text-classification", "tabular-classification"]),
    "zsc": (lambda f: build_bert(f, "nli"), "zero-shot-classification", ["text-classification"]),
    "qa": (lambda f: build_bert(f, "qa"), "question-answering", ["question-answering"]),
    "emb": (lambda f: build_bert(f, "none"), "feature-extraction", ["sentence-similarity"]),
    "t5-sum": (build_t5, "summarization", ["summarization"]),
    "t5-tr": (build_t5, "translation", ["translation"]),
    "t5-gen": (build_t5, "text2text-generation", ["text2text-generation"]),
    "whisper": (build_whisper, "automatic-speech-recognition", ["automatic-speech-recognition"]),
    "vits": (build_vits, "text-to-speech", ["text-to-speech"]),
    "w2v2": (build_wav2vec2, "audio-classification", ["audio-classification"]),
}


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelCard]:
    """Every tiny model, built once, as cards of the transformers backend."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        missing("transformers is not installed (the torch extra)")
    root = tmp_path_factory.mktemp("hf-text-audio")
    cards = {}
    built: dict[Any, Path] = {}
    for name, (build, pipeline, tasks) in BUILDERS.items():
        folder = built.get(build)
        if folder is None:
            folder = root / name
            folder.mkdir()
            build(folder)
            built[build] = folder
        cards[name] = ModelCard(id=f"tiny-{name}", tasks=tasks, backend="transformers", format="pytorch",
                                description=f"tiny random {name}", path=folder, options={"pipeline": pipeline})
    s2s = root / "s2s"
    s2s.mkdir()
    build_speecht5_s2s(s2s)
    cards["s2s"] = ModelCard(id="tiny-s2s", tasks=["audio-to-audio"], backend="transformers-s2s", format="pytorch",
                             description="tiny random SpeechT5 speech-to-speech", path=s2s)
    return cards


@pytest.fixture(scope="session")
def experts(models: dict[str, ModelCard]) -> dict[str, Any]:
    """An expert per tiny model, loaded on first use and shared by the tests."""
    ctx = ExpertContext(settings=Settings(device="cpu", threads=1))
    return {name: expert_class(card.backend)(card, ctx) for name, card in models.items()}


@pytest.fixture
def tone(tmp_path: Path) -> Path:
    """Half a second of a 16 kHz tone with some noise, as a WAV."""
    import numpy as np

    t = np.arange(8000) / 16_000
    samples = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * np.random.default_rng(0).standard_normal(8000)
    path = tmp_path / "tone.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes((samples * 32767).astype("<i2").tobytes())
    return path


def check_data(data: Any, runtime: str = "pytorch/cpu") -> None:
    """Data is JSON-serialisable and names where the model ran."""
    json.dumps(data)
    assert data["runtime"] == runtime


def read_wav(path: str) -> tuple[int, int, int]:
    """(channels, sample rate, frames) of a WAV file."""
    with wave.open(path, "rb") as wav:
        return wav.getnchannels(), wav.getframerate(), wav.getnframes()


# --- text ---


def test_token_classification_groups_entities_with_spans(experts: dict[str, Any], run_dir: RunDir) -> None:
    text = "ada lovelace wrote notes in london"
    result = experts["ner"].run("token-classification", {"text": text}, run_dir)
    check_data(result.data)
    for entity in result.data["entities"]:
        assert entity["label"] in {"O", "PER", "LOC"}
        assert 0.0 <= entity["score"] <= 1.0
        assert text[entity["start"]:entity["end"]].strip() == entity["text"]
    assert isinstance(result.outputs["text"], str) and result.outputs["text"]


def test_text_classification_scores_labels(experts: dict[str, Any], run_dir: RunDir) -> None:
    result = experts["cls"].run("text-classification", {"text": "the dog ran in the park"}, run_dir)
    check_data(result.data)
    labels = result.data["labels"]
    assert {x["label"] for x in labels} == {"negative", "positive"}
    assert abs(sum(x["score"] for x in labels) - 1.0) < 1e-4
    assert labels[0]["score"] >= labels[1]["score"] and result.data["label"] == labels[0]["label"]
    picked = experts["cls"].run("text-classification", {"text": "the cat", "labels": "Positive"}, run_dir)
    assert picked.data["labels"] == [{"label": "positive", "score": 1.0}]
    with pytest.raises(InputError, match="knows no label"):
        experts["cls"].run("text-classification", {"text": "the cat", "labels": "sports"}, run_dir)


def test_zero_shot_model_scores_the_candidate_labels(experts: dict[str, Any], run_dir: RunDir) -> None:
    result = experts["zsc"].run("text-classification", {"text": "the dog ran in the park",
                                                        "labels": "city, park, france"}, run_dir)
    check_data(result.data)
    assert sorted(x["label"] for x in result.data["labels"]) == ["city", "france", "park"]
    assert abs(sum(x["score"] for x in result.data["labels"]) - 1.0) < 1e-4
    with pytest.raises(InputError, match="candidate 'labels'"):
        experts["zsc"].run("text-classification", {"text": "the dog"}, run_dir)


def test_question_answering_returns_a_span_of_the_context(experts: dict[str, Any], run_dir: RunDir) -> None:
    context = "paris is the capital of france"
    result = experts["qa"].run("question-answering", {"question": "what is the capital of france ?",
                                                      "context": context}, run_dir)
    check_data(result.data)
    data = result.data
    assert 0 <= data["start"] <= data["end"] <= len(context)
    assert context[data["start"]:data["end"]] == data["answer"]
    assert 0.0 <= data["score"] <= 1.0


@pytest.mark.parametrize(("name", "task"), [("t5-sum", "summarization"), ("t5-tr", "translation"),
                                            ("t5-gen", "text2text-generation")])
def test_seq2seq_tasks_generate_text(experts: dict[str, Any], run_dir: RunDir, name: str, task: str) -> None:
    result = experts[name].run(task, {"text": "the cat sat on the mat", "target_language": "fr"}, run_dir)
    check_data(result.data)
    assert isinstance(result.data["text"], str)
    assert result.outputs["text"] == (result.data["text"] or "(empty)")
    if task == "translation":  # T5 has no language codes: the request is recorded, not silently dropped
        assert "ignored" in result.data["note"]
    with pytest.raises(InputError, match="non-empty"):
        experts[name].run(task, {"text": " "}, run_dir)


def test_sentence_similarity_from_feature_extraction(experts: dict[str, Any], run_dir: RunDir) -> None:
    same = experts["emb"].run("sentence-similarity", {"text": "the cat sat", "other_text": "the cat sat"}, run_dir)
    check_data(same.data)
    assert same.data["score"] == pytest.approx(1.0, abs=1e-5)
    other = experts["emb"].run("sentence-similarity", {"text": "the cat sat", "other_text": "bob ran"}, run_dir)
    assert -1.0 <= other.data["score"] < 1.0 - 1e-4


def test_tabular_classification_reads_the_table_image(experts: dict[str, Any], run_dir: RunDir,
                                                      tmp_path: Path) -> None:
    try:
        import rapidocr_onnxruntime  # noqa: F401
    except ImportError:
        missing("rapidocr-onnxruntime is not installed (the cpu extra); it reads the table")
    from PIL import Image, ImageDraw, ImageFont

    from localgpt.experts.hf_text_audio import table_rows

    rows = [["name", "age", "income"], ["alice", "35", "1000"], ["bob", "52", "2000"]]
    font = ImageFont.load_default(size=32)
    image = Image.new("RGB", (620, 230), "white")
    draw = ImageDraw.Draw(image)
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            draw.text((30 + 200 * c, 25 + 65 * r), cell, fill="black", font=font)
    image.save(tmp_path / "table.png")
    result = experts["cls"].run("tabular-classification", {"image": str(tmp_path / "table.png")}, run_dir)
    check_data(result.data)
    assert [c.lower() for c in result.data["header"]] == rows[0]
    assert [[c.lower() for c in r["cells"]] for r in result.data["rows"]] == rows[1:]
    assert result.data["rows"][0]["text"].lower() == "name: alice, age: 35, income: 1000"
    assert all(r["label"] in LABELS.values() for r in result.data["rows"])
    assert result.outputs["text"].startswith("row 1: ")
    # rows are grouped by height even when a cell sits a little lower than its neighbours
    box = [[0, 10], [50, 10], [50, 30], [0, 30]]
    lower = [[60, 14], [120, 14], [120, 34], [60, 34]]
    assert table_rows([{"text": "b", "box": lower}, {"text": "a", "box": box}]) == [["a", "b"]]


# --- audio ---


def test_whisper_transcribes_to_text(experts: dict[str, Any], run_dir: RunDir, tone: Path) -> None:
    result = experts["whisper"].run("automatic-speech-recognition", {"audio": str(tone)}, run_dir)
    check_data(result.data)
    assert result.data["seconds"] == pytest.approx(0.5, abs=0.01)
    assert isinstance(result.data["text"], str) and result.outputs["text"]


def test_vits_speaks_a_wav_at_its_rate(experts: dict[str, Any], run_dir: RunDir) -> None:
    result = experts["vits"].run("text-to-speech", {"text": "the cat sat on the mat."}, run_dir)
    check_data(result.data)
    path = result.outputs["audio"]
    assert Path(path).parent == run_dir.path and path.endswith(".wav")
    channels, rate, frames = read_wav(path)
    assert (channels, rate) == (1, 8000) and result.data["sample_rate"] == 8000
    assert frames > 0 and result.data["seconds"] == pytest.approx(frames / 8000, abs=1e-3)


def test_wav2vec2_classifies_audio(experts: dict[str, Any], run_dir: RunDir, tone: Path, tmp_path: Path) -> None:
    result = experts["w2v2"].run("audio-classification", {"audio": str(tone)}, run_dir)
    check_data(result.data)
    assert {x["label"] for x in result.data["labels"]} == {"speech", "music", "noise"}
    assert abs(sum(x["score"] for x in result.data["labels"]) - 1.0) < 1e-4
    assert result.outputs["text"].startswith(result.data["label"])
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really")
    with pytest.raises(InputError, match="cannot be decoded"):
        experts["w2v2"].run("audio-classification", {"audio": str(bad)}, run_dir)


def test_speecht5_converts_speech_to_a_wav(experts: dict[str, Any], run_dir: RunDir, tone: Path) -> None:
    result = experts["s2s"].run("audio-to-audio", {"audio": str(tone)}, run_dir)
    check_data(result.data)
    channels, rate, frames = read_wav(result.outputs["audio"])
    assert (channels, rate) == (1, 16_000) and frames > 0
    assert frames % 16 == 0  # the vocoder makes 4 x 4 samples per mel frame


def test_close_frees_the_pipeline(models: dict[str, ModelCard], run_dir: RunDir) -> None:
    expert = expert_class("transformers")(models["cls"], ExpertContext(settings=Settings(device="cpu")))
    expert.run("text-classification", {"text": "a dog"}, run_dir)
    assert expert.loaded and expert.pipe is not None
    expert.close()
    assert not expert.loaded and expert.pipe is None


def contract_cases() -> list[Any]:
    """Tiny transformers text and audio models under the expert contract (tests/test_expert_contract.py)."""
    from tests.contract.test_expert_contract import Case, CaseEnv, wav_file

    def tiny(name: str) -> Any:
        def card(env: CaseEnv) -> ModelCard:
            folder = env.base / "hf-text-audio-contract" / name
            if name == "s2s":
                build, pipeline, tasks, backend = build_speecht5_s2s, None, ["audio-to-audio"], "transformers-s2s"
            else:
                build, pipeline, tasks = BUILDERS[name]
                backend = "transformers"
            if not (folder / "config.json").is_file():
                folder.mkdir(parents=True, exist_ok=True)
                build(folder)
            options = {"pipeline": pipeline} if pipeline else {}
            return ModelCard(id=f"tiny-{name}", tasks=tasks, backend=backend, format="pytorch",
                             description=f"tiny random {name}", path=folder, options=options)
        return card

    def audio(env: CaseEnv, folder: Path) -> dict[str, str]:
        return {"audio": str(wav_file(folder, seconds=0.3))}

    def table(env: CaseEnv, folder: Path) -> dict[str, str]:
        from PIL import Image, ImageDraw, ImageFont

        image = Image.new("RGB", (420, 160), "white")
        draw = ImageDraw.Draw(image)
        for r, row in enumerate([["name", "age"], ["alice", "35"]]):
            for c, cell in enumerate(row):
                draw.text((30 + 200 * c, 30 + 65 * r), cell, fill="black", font=ImageFont.load_default(size=32))
        image.save(folder / "table.png")
        return {"image": str(folder / "table.png")}

    def pipe(expert: Any) -> Any:
        return expert.pipe

    return [
        Case("hf-whisper-asr", tiny("whisper"), "automatic-speech-recognition", audio, held=pipe),
        Case("hf-vits-tts", tiny("vits"), "text-to-speech", lambda env, d: {"text": "the cat sat."}, held=pipe),
        Case("hf-wav2vec2-audio-cls", tiny("w2v2"), "audio-classification", audio, held=pipe),
        Case("hf-speecht5-audio-to-audio", tiny("s2s"), "audio-to-audio", audio,
             held=lambda e: e._parts["model"]),
        Case("hf-bert-ner", tiny("ner"), "token-classification", lambda env, d: {"text": "ada lovelace in london"},
             held=pipe),
        Case("hf-bert-text-cls", tiny("cls"), "text-classification", lambda env, d: {"text": "the dog ran"},
             held=pipe),
        Case("hf-bert-qa", tiny("qa"), "question-answering",
             lambda env, d: {"question": "who wrote notes ?", "context": "ada lovelace wrote notes"}, held=pipe),
        Case("hf-t5-summarization", tiny("t5-sum"), "summarization", lambda env, d: {"text": "the cat sat on mat"},
             held=pipe),
        Case("hf-bert-tabular", tiny("cls"), "tabular-classification", table, held=pipe),
    ]
