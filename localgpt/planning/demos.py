"""localgpt's own planning demonstrations: a request, the files it came with, and its plan.

The planner shows the few most similar ones to the LLM before each request.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Demo:
    """One worked example for the planner: the request, its files, its plan and, in plain words, the
    steps the plan carries out (one per task, in order; the planner writes such steps before its
    tasks when it decomposes)."""

    request: str
    files: tuple[str, ...]
    plan: tuple[dict[str, Any], ...]
    steps: tuple[str, ...] = ()

    def uses_only(self, names: Collection[str]) -> bool:
        """Whether every task of the plan is of a type in ``names`` (a demo the planner may show when
        it is offered only those types)."""
        return all(step["task"] in names for step in self.plan)


def task_types(demos: Iterable[Demo]) -> set[str]:
    """The task types the plans of ``demos`` use."""
    return {step["task"] for demo in demos for step in demo.plan}


def _t(i: int, task: str, args: dict[str, str], dep: tuple[int, ...] = ()) -> dict[str, Any]:
    return {"id": i, "task": task, "dep": list(dep) or [-1], "args": args}


DEMOS: tuple[Demo, ...] = (
    Demo("Read this sentence aloud: good morning, everyone.", (),
         (_t(0, "text-to-speech", {"text": "good morning, everyone."}),),
         steps=("Step 1: Read the sentence aloud.",)),
    Demo("What is said in meeting.wav?", ("meeting.wav",),
         (_t(0, "automatic-speech-recognition", {"audio": "meeting.wav"}),),
         steps=("Step 1: Transcribe the speech in meeting.wav.",)),
    Demo("Transcribe interview.mp3 and give me a short summary of it.", ("interview.mp3",),
         (_t(0, "automatic-speech-recognition", {"audio": "interview.mp3"}),
          _t(1, "summarization", {"text": "<resource>-0"}, (0,))),
         steps=("Step 1: Transcribe the speech in interview.mp3.", "Step 2: Summarize the transcript.")),
    Demo("Describe photo.jpg and then read the description out loud.", ("photo.jpg",),
         (_t(0, "image-to-text", {"image": "photo.jpg"}),
          _t(1, "text-to-speech", {"text": "<resource>-0"}, (0,))),
         steps=("Step 1: Describe photo.jpg in words.", "Step 2: Read the description aloud.")),
    Demo("How close in meaning are 'the cat sat on the mat' and 'a cat was sitting on a rug'?", (),
         (_t(0, "sentence-similarity",
             {"text": "the cat sat on the mat", "other_text": "a cat was sitting on a rug"}),),
         steps=("Step 1: Score how similar the two sentences are.",)),
    Demo("Translate 'where is the train station' into German and say it aloud.", (),
         (_t(0, "translation", {"text": "where is the train station", "target_language": "German"}),
          _t(1, "text-to-speech", {"text": "<resource>-0"}, (0,))),
         steps=("Step 1: Translate the sentence into German.", "Step 2: Read the German translation aloud.")),
    Demo("Draw a lighthouse at sunset, then tell me what objects are in the picture.", (),
         (_t(0, "text-to-image", {"text": "a lighthouse at sunset"}),
          _t(1, "object-detection", {"image": "<resource>-0"}, (0,))),
         steps=("Step 1: Draw a lighthouse at sunset.", "Step 2: Detect the objects in the drawn picture.")),
    Demo("Which animal is in cat.png, and how deep is the scene?", ("cat.png",),
         (_t(0, "image-classification", {"image": "cat.png"}),
          _t(1, "depth-estimation", {"image": "cat.png"})),
         steps=("Step 1: Classify the animal in cat.png.", "Step 2: Estimate the depth of cat.png.")),
    Demo("In street.jpg, how many cars are parked on the left?", ("street.jpg",),
         (_t(0, "visual-question-answering",
             {"image": "street.jpg", "text": "how many cars are parked on the left?"}),),
         steps=("Step 1: Answer the question about street.jpg.",)),
    Demo("Make the sky in beach.png look stormy.", ("beach.png",),
         (_t(0, "image-editing", {"image": "beach.png", "text": "make the sky look stormy"}),),
         steps=("Step 1: Edit beach.png so that the sky looks stormy.",)),
    Demo("Say 'hello world' aloud, then transcribe the audio and check it says the same.", (),
         (_t(0, "text-to-speech", {"text": "hello world"}),
          _t(1, "automatic-speech-recognition", {"audio": "<resource>-0"}, (0,)),
          _t(2, "sentence-similarity", {"text": "<resource>-1", "other_text": "hello world"}, (1,))),
         steps=("Step 1: Say 'hello world' aloud.", "Step 2: Transcribe the spoken audio.",
                "Step 3: Compare the transcript with 'hello world'.")),
    Demo("Find the people and places named in: Ada Lovelace worked in London with Charles Babbage.", (),
         (_t(0, "token-classification", {"text": "Ada Lovelace worked in London with Charles Babbage."}),),
         steps=("Step 1: Find the named entities in the sentence.",)),
    Demo("Write a two-line poem about rain and make a short video of it.", (),
         (_t(0, "text-generation", {"text": "a two-line poem about rain"}),
          _t(1, "text-to-video", {"text": "<resource>-0"}, (0,))),
         steps=("Step 1: Write a two-line poem about rain.", "Step 2: Make a short video from the poem.")),
    Demo("Is this review positive or negative: the food was cold and the waiter rude.", (),
         (_t(0, "text-classification", {"text": "the food was cold and the waiter rude.",
                                        "labels": "positive, negative"}),),
         steps=("Step 1: Classify the review as positive or negative.",)),
    Demo("What does the invoice scan.png say the total is?", ("scan.png",),
         (_t(0, "document-question-answering", {"image": "scan.png", "text": "what is the total?"}),),
         steps=("Step 1: Ask the document scan.png for its total.",)),
    Demo("Clean up the noise in call.wav and tell me what kind of sound it is.", ("call.wav",),
         (_t(0, "audio-to-audio", {"audio": "call.wav"}),
          _t(1, "audio-classification", {"audio": "<resource>-0"}, (0,))),
         steps=("Step 1: Remove the noise from call.wav.", "Step 2: Classify the sound of the cleaned audio.")),
    Demo("Make a picture of an old man dancing in the rain, in the same pose as the woman in dancer.jpg.",
         ("dancer.jpg",),
         (_t(0, "pose-detection", {"image": "dancer.jpg"}),
          _t(1, "pose-text-to-image", {"image": "<resource>-0", "text": "an old man dancing in the rain"}, (0,))),
         steps=("Step 1: Detect the pose of the woman in dancer.jpg.",
                "Step 2: Draw an old man dancing in the rain in that pose.")),
    Demo("Tell me what park.png and runner.jpg show, then paint a robot in the runner's pose.",
         ("park.png", "runner.jpg"),
         (_t(0, "image-to-text", {"image": "park.png"}),
          _t(1, "image-to-text", {"image": "runner.jpg"}),
          _t(2, "pose-detection", {"image": "runner.jpg"}),
          _t(3, "pose-text-to-image", {"image": "<resource>-2", "text": "a robot running"}, (2,))),
         steps=("Step 1: Describe park.png.",
                "Step 2: Describe runner.jpg.",
                "Step 3: Detect the runner's pose in runner.jpg.",
                "Step 4: Draw a robot running in that pose.")),
    Demo("Keep the outlines of house.png but make it a watercolour of a cottage in the snow.", ("house.png",),
         (_t(0, "canny-control", {"image": "house.png"}),
          _t(1, "canny-text-to-image", {"image": "<resource>-0", "text": "a watercolour of a cottage in the snow"},
             (0,))),
         steps=("Step 1: Find the edges of house.png.",
                "Step 2: Draw a watercolour cottage in the snow on those edges.")),
    Demo("Keep the straight lines of office.jpg and draw it as a spaceship bridge.", ("office.jpg",),
         (_t(0, "line-control", {"image": "office.jpg"}),
          _t(1, "line-text-to-image", {"image": "<resource>-0", "text": "a spaceship bridge"}, (0,))),
         steps=("Step 1: Find the straight lines of office.jpg.",
                "Step 2: Draw a spaceship bridge along those lines.")),
    Demo("Tell me a joke.", (),
         (_t(0, "text-generation", {"text": "Tell me a joke."}),),
         steps=("Step 1: Write a joke.",)),
    Demo("Hi! How are you doing today?", (),
         (_t(0, "conversational", {"text": "Hi! How are you doing today?"}),),
         steps=("Step 1: Reply to the greeting.",)),
    Demo("Tell me a joke about dentists and show me a picture of a giraffe on a skateboard.", (),
         (_t(0, "text-generation", {"text": "a joke about dentists"}),
          _t(1, "text-to-image", {"text": "a giraffe on a skateboard"})),
         steps=("Step 1: Write a joke about dentists.", "Step 2: Draw a giraffe on a skateboard.")),
    Demo("Count the birds in lake1.jpg, lake2.jpg and lake3.jpg.", ("lake1.jpg", "lake2.jpg", "lake3.jpg"),
         (_t(0, "object-detection", {"image": "lake1.jpg"}),
          _t(1, "object-detection", {"image": "lake2.jpg"}),
          _t(2, "object-detection", {"image": "lake3.jpg"})),
         steps=("Step 1: Detect the birds in lake1.jpg.", "Step 2: Detect the birds in lake2.jpg.",
                "Step 3: Detect the birds in lake3.jpg.")),
    Demo("Transcribe call_a.mp3 and call_b.mp3, then summarize each call.", ("call_a.mp3", "call_b.mp3"),
         (_t(0, "automatic-speech-recognition", {"audio": "call_a.mp3"}),
          _t(1, "automatic-speech-recognition", {"audio": "call_b.mp3"}),
          _t(2, "summarization", {"text": "<resource>-0"}, (0,)),
          _t(3, "summarization", {"text": "<resource>-1"}, (1,))),
         steps=("Step 1: Transcribe call_a.mp3.", "Step 2: Transcribe call_b.mp3.",
                "Step 3: Summarize the first transcript.", "Step 4: Summarize the second transcript.")),
    Demo("Write a short story about a lost robot, summarize it in one sentence, translate the summary into "
         "French and read it aloud.", (),
         (_t(0, "text-generation", {"text": "a short story about a lost robot"}),
          _t(1, "summarization", {"text": "<resource>-0"}, (0,)),
          _t(2, "translation", {"text": "<resource>-1", "target_language": "French"}, (1,)),
          _t(3, "text-to-speech", {"text": "<resource>-2"}, (2,))),
         steps=("Step 1: Write a short story about a lost robot.", "Step 2: Summarize the story in one sentence.",
                "Step 3: Translate the summary into French.", "Step 4: Read the French translation aloud.")),
    Demo("Clean up lecture.wav, transcribe it, summarize the transcript, translate the summary into German and "
         "read the German text aloud.", ("lecture.wav",),
         (_t(0, "audio-to-audio", {"audio": "lecture.wav"}),
          _t(1, "automatic-speech-recognition", {"audio": "<resource>-0"}, (0,)),
          _t(2, "summarization", {"text": "<resource>-1"}, (1,)),
          _t(3, "translation", {"text": "<resource>-2", "target_language": "German"}, (2,)),
          _t(4, "text-to-speech", {"text": "<resource>-3"}, (3,))),
         steps=("Step 1: Remove the noise from lecture.wav.", "Step 2: Transcribe the cleaned audio.",
                "Step 3: Summarize the transcript.", "Step 4: Translate the summary into German.",
                "Step 5: Read the German translation aloud.")),
    Demo("把 lecture.mp3 转成文字，再总结一下", ("lecture.mp3",),
         (_t(0, "automatic-speech-recognition", {"audio": "lecture.mp3"}),
          _t(1, "summarization", {"text": "<resource>-0"}, (0,))),
         steps=("Step 1: 把 lecture.mp3 转成文字。", "Step 2: 总结转写的文字。")),
    Demo("画一只在雪地里奔跑的狐狸", (),
         (_t(0, "text-to-image", {"text": "一只在雪地里奔跑的狐狸"}),),
         steps=("Step 1: 画一只在雪地里奔跑的狐狸。",)),
    Demo("Was zeigt balkon.jpg? Erzähl es mir in Worten und sprich den Text danach ein.", ("balkon.jpg",),
         (_t(0, "image-to-text", {"image": "balkon.jpg"}),
          _t(1, "text-to-speech", {"text": "<resource>-0"}, (0,))),
         steps=("Step 1: Beschreibe balkon.jpg in Worten.", "Step 2: Sprich die Beschreibung ein.")),
    Demo("「おはようございます」を英語に翻訳して、読み上げてください。", (),
         (_t(0, "translation", {"text": "おはようございます", "target_language": "English"}),
          _t(1, "text-to-speech", {"text": "<resource>-0"}, (0,))),
         steps=("Step 1: 「おはようございます」を英語に翻訳する。", "Step 2: 翻訳を読み上げる。")),
    Demo("اكتب قصة قصيرة عن قطة ضائعة في المدينة، ثم لخصها في جملة واحدة", (),
         (_t(0, "text-generation", {"text": "قصة قصيرة عن قطة ضائعة في المدينة"}),
          _t(1, "summarization", {"text": "<resource>-0"}, (0,))),
         steps=("Step 1: اكتب قصة قصيرة عن قطة ضائعة في المدينة.", "Step 2: لخص القصة في جملة واحدة.")),
    Demo("¿De qué color es el coche en calle.jpg?", ("calle.jpg",),
         (_t(0, "visual-question-answering", {"image": "calle.jpg", "text": "¿De qué color es el coche?"}),),
         steps=("Step 1: Pregunta a calle.jpg de qué color es el coche.",)),
    Demo("Welche Gegenstände sind auf küche.jpg zu sehen?", ("küche.jpg",),
         (_t(0, "object-detection", {"image": "küche.jpg"}),),
         steps=("Step 1: Erkenne die Gegenstände auf küche.jpg.",)),
    Demo("ما الحيوان الموجود في الصورة pet.jpg؟", ("pet.jpg",),
         (_t(0, "image-classification", {"image": "pet.jpg"}),),
         steps=("Step 1: صنّف الحيوان في الصورة pet.jpg.",)),
    Demo("Transcris l'enregistrement appel.wav, s'il te plaît.", ("appel.wav",),
         (_t(0, "automatic-speech-recognition", {"audio": "appel.wav"}),),
         steps=("Step 1: Transcrire appel.wav.",)),
    Demo("夕焼けの海の絵を描いて", (),
         (_t(0, "text-to-image", {"text": "夕焼けの海"}),),
         steps=("Step 1: 夕焼けの海の絵を描く。",)),
)

# The demos the planner may write into its system prompt (``PlannerOptions.system_demos`` of them, first
# first), where their evaluated state is kept with the rest of that prompt, so they cost a request nothing:
# one of each shape a plan takes (a chain across kinds, a fan-out over files, an answer of the LLM's own
# beside another task, a long text chain, a question about an image, a chain per file, a request in
# another script, two tasks on one file, small talk).
PROMPT_DEMOS: tuple[Demo, ...] = tuple(DEMOS[i] for i in (3, 23, 22, 25, 8, 24, 27, 7, 21, 5))
