"""English words that are evidence for the planner (see :mod:`localgpt.planning.lexicon`)."""

from localgpt.planning.language import Lexicon

LEXICON = Lexicon(
    code="en",
    common=("the", "and", "what", "is", "this", "of", "in", "it", "me", "please", "then", "into", "a", "an",
            "how", "my", "with", "for", "to", "are"),
    chain=("then", "after", "afterwards", "finally", "next", "also", "once", "followed", "and", "lastly", "later",
           "subsequently", "as well"),
    actions=("classify", "detect", "segment", "generate", "create", "convert", "translate", "summarize", "summarise",
             "transcribe", "answer", "describe", "edit", "modify", "change", "identify", "extract*", "estimate",
             "read", "speak", "produce", "make", "turn", "enhance", "analyze", "analyse", "recognize", "recognise",
             "tell", "find", "determine", "compare", "caption*", "write", "paraphrase", "video", "image", "speech",
             "audio", "label"),
    tasks={
        "document-question-answering": ("document", "page", "invoice", "receipt", "scan*", "form", "text on",
                                        "written"),
        "image-to-text": ("caption*", "describ*", "description", "extract*", "ocr"),
        "text-to-image": ("draw*", "paint*", "illustrat*", "sketch of", "render"),
        "text-to-video": ("video", "clip of", "animation"),
        "text-to-speech": ("aloud", "out loud", "read out", "speak*", "voice", "narrat*"),
    },
    original=("original", "initial", "given", "input", "provided", "uploaded", "source", "unedited"),
    picture=("image", "picture", "photo", "photograph", "document", "invoice", "receipt", "scan*", "page"),
    makers=("create", "generate", "produce", "draw", "paint", "design", "render", "want a", "want an", "want some",
            "need a", "need an", "like a", "like an", "make a", "make an", "make some", "make me a", "make me an"),
    media={"image": ("image", "picture", "photo", "illustration", "drawing"), "video": ("video", "clip"),
           "audio": ("speech", "audio")},
)
