"""The task registry: every task type localgpt can plan, its inputs and what it produces.

This module is the one source for the plan schema, plan validation, the model catalog,
the documentation and the UI. Task names are Hugging Face pipeline tags, as in HuggingGPT.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import Enum
from pathlib import Path


class Kind(str, Enum):
    """The kind of a value flowing between tasks."""

    TEXT = "text"
    IMAGE = "image"
    AUDIO = "audio"
    VIDEO = "video"


@dataclass(frozen=True)
class InputSpec:
    """One named argument of a task."""

    name: str
    kind: Kind
    required: bool = True
    description: str = ""


@dataclass(frozen=True)
class Substitute:
    """A task that may stand in for another when no installed model serves that one (or the one that
    serves it finds nothing): it takes the same media input and yields the kind needed, though less.

    ``gives`` says what the user gets instead; ``then`` names a text task the controller LLM runs next,
    with the stand-in's output as ``context`` and the planned task's ``text`` as ``question``.
    """

    task: str
    gives: str
    then: str | None = None


@dataclass(frozen=True)
class TaskSpec:
    """A task type: its arguments, the kinds it produces (primary first) and who can serve it.

    ``llm_servable`` marks text tasks the controller LLM answers itself when no dedicated
    model is installed, as HuggingGPT routes them to its LLM. ``substitutes`` are the tasks that may
    stand in for this one, in order of preference; ``no_substitute`` says why a task has none.
    """

    name: str
    description: str
    inputs: tuple[InputSpec, ...]
    produces: tuple[Kind, ...]
    llm_servable: bool = False
    substitutes: tuple[Substitute, ...] = ()
    no_substitute: str = ""

    @property
    def output(self) -> Kind:
        """The primary kind this task produces."""
        return self.produces[0]

    def input(self, name: str) -> InputSpec | None:
        """The argument called ``name``, or None."""
        return next((i for i in self.inputs if i.name == name), None)

    @property
    def required(self) -> tuple[InputSpec, ...]:
        """The arguments a plan must always give."""
        return tuple(i for i in self.inputs if i.required)


T, IMG, A, V = Kind.TEXT, Kind.IMAGE, Kind.AUDIO, Kind.VIDEO


def _text(desc: str = "the text to work on") -> InputSpec:
    return InputSpec("text", T, True, desc)


def _image(desc: str = "the image to work on") -> InputSpec:
    return InputSpec("image", IMG, True, desc)


def _audio(desc: str = "the audio to work on") -> InputSpec:
    return InputSpec("audio", A, True, desc)


TASKS: tuple[TaskSpec, ...] = (
    # --- text ---
    TaskSpec("text-classification", "label a text (sentiment, topic, language, ...)",
             (_text(), InputSpec("labels", T, False, "comma-separated candidate labels")), (T,), True),
    TaskSpec("token-classification", "find named entities or tag the words of a text", (_text(),), (T,), True),
    TaskSpec("text2text-generation", "rewrite or transform a text following an instruction",
             (_text("the instruction and the text"),), (T,), True),
    TaskSpec("summarization", "shorten a text to its main points", (_text(),), (T,), True),
    TaskSpec("translation", "translate a text into another language",
             (_text(), InputSpec("target_language", T, False, "the language to translate into")), (T,), True),
    TaskSpec("question-answering", "answer a question from a given context text",
             (InputSpec("question", T, True, "the question"),
              InputSpec("context", T, True, "the text holding the answer")),
             (T,), True),
    TaskSpec("conversational", "reply to a message as a chat assistant", (_text("the message"),), (T,), True),
    TaskSpec("text-generation", "write new text from a prompt", (_text("the prompt"),), (T,), True),
    TaskSpec("sentence-similarity", "score how close in meaning two texts are",
             (_text("the first text"), InputSpec("other_text", T, True, "the second text")), (T,)),
    TaskSpec("tabular-classification", "classify a table shown in an image (a scan or screenshot of the table)",
             (_image("the image of the table"),), (T,)),
    # --- vision ---
    TaskSpec("object-detection", "find and box the objects in an image", (_image(),), (IMG, T),
             no_substitute="labels say what an image shows, not where or how many: nothing installed can box or "
                           "count objects without a detector"),
    TaskSpec("image-classification", "say what an image shows, as labels with scores", (_image(),), (T,)),
    TaskSpec("image-to-text", "describe an image in words (captioning) or read the text in it", (_image(),), (T,),
             substitutes=(Substitute("image-classification", "labels of what the image shows, with scores, "
                                                             "not a sentence"),)),
    TaskSpec("text-to-image", "draw an image from a description", (_text("the description of the image"),), (IMG,)),
    TaskSpec("image-to-image", "make a new image from an image and an optional prompt",
             (_image(), InputSpec("text", T, False, "what to change")), (IMG,)),
    TaskSpec("image-editing", "edit an image as a text instruction says",
             (_image(), InputSpec("text", T, True, "the edit instruction")), (IMG,)),
    TaskSpec("image-segmentation", "split an image into labelled regions (masks)", (_image(),), (IMG, T)),
    TaskSpec("depth-estimation", "estimate the depth of each pixel of an image", (_image(),), (IMG,)),
    TaskSpec("document-question-answering", "answer a question about a document image",
             (_image("the document image"), InputSpec("text", T, True, "the question")), (T,)),
    TaskSpec("visual-question-answering", "answer a question about an image",
             (_image(), InputSpec("text", T, True, "the question")), (T,),
             substitutes=(Substitute("image-classification", "an answer the LLM infers from the image's labels; "
                                     "it does not see the picture", then="question-answering"),)),
    TaskSpec("text-to-video", "make a short video from a description", (_text("the description of the video"),), (V,)),
    # --- control (ControlNet): annotators make a control image, conditioned generation follows it ---
    TaskSpec("pose-detection", "find a person's body pose: keypoints and a skeleton image to draw others in that pose",
             (_image("the photo of a person"),), (IMG, T)),
    TaskSpec("canny-control", "trace the edges of an image (Canny) into an edge map that guides drawing",
             (_image(),), (IMG,)),
    TaskSpec("line-control", "find the straight lines of an image (M-LSD style) into a line map that guides drawing "
             "buildings and rooms", (_image(),), (IMG, T)),
    TaskSpec("pose-text-to-image", "draw an image from a description in the pose of a skeleton image",
             (_image("the pose skeleton image (from pose-detection)"), _text("the description of the image")), (IMG,)),
    TaskSpec("canny-text-to-image", "draw an image from a description following the outlines of an edge map",
             (_image("the edge map (from canny-control)"), _text("the description of the image")), (IMG,)),
    TaskSpec("depth-text-to-image", "draw an image from a description with the layout of a depth map",
             (_image("the depth map (from depth-estimation)"), _text("the description of the image")), (IMG,)),
    TaskSpec("segmentation-text-to-image", "draw an image from a description with the regions of a segmentation map",
             (_image("the segmentation map (from image-segmentation)"), _text("the description of the image")),
             (IMG,)),
    TaskSpec("line-text-to-image", "draw an image from a description following the straight lines of a line map",
             (_image("the line map (from line-control)"), _text("the description of the image")), (IMG,)),
    TaskSpec("scribble-text-to-image", "draw an image from a description following a hand-drawn sketch (scribble)",
             (_image("the user's sketch: lines on a plain background"), _text("the description of the image")),
             (IMG,)),
    # --- audio ---
    TaskSpec("text-to-speech", "read a text aloud", (_text("the text to speak"),), (A,)),
    TaskSpec("automatic-speech-recognition", "transcribe speech to text", (_audio("the speech to transcribe"),), (T,)),
    TaskSpec("audio-to-audio", "transform audio (enhance speech, separate sources)", (_audio(),), (A,)),
    TaskSpec("audio-classification", "label a sound or a speech recording", (_audio(),), (T,)),
)

_BY_NAME = {spec.name: spec for spec in TASKS}


def get(name: str) -> TaskSpec:
    """The spec of task ``name``; KeyError if unknown."""
    return _BY_NAME[name]


def names() -> list[str]:
    """All task names, in registry order."""
    return [spec.name for spec in TASKS]


def in_order(names: Collection[str]) -> list[TaskSpec]:
    """The specs of the task types ``names``, in registry order (names not registered left out)."""
    return [spec for spec in TASKS if spec.name in names]


def is_known(name: str) -> bool:
    """Whether ``name`` is a registered task type."""
    return name in _BY_NAME


# File name endings accepted as a literal argument of each kind (content is sniffed at run time).
EXTENSIONS: dict[Kind, frozenset[str]] = {
    IMG: frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"}),
    A: frozenset({".wav", ".mp3", ".flac", ".ogg", ".m4a", ".opus"}),
    V: frozenset({".mp4", ".webm", ".mov", ".avi", ".mkv"}),
}


def kind_by_name(value: str) -> Kind | None:
    """The media kind a file name's ending suggests, or None."""
    suffix = Path(value.strip()).suffix.lower()
    for kind, endings in EXTENSIONS.items():
        if suffix in endings:
            return kind
    return None
