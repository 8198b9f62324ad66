"""German words that are evidence for the planner (see :mod:`localgpt.planning.lexicon`)."""

from localgpt.planning.language import Lexicon

LEXICON = Lexicon(
    code="de",
    common=("der", "die", "das", "und", "ist", "bitte", "mir", "ein", "eine", "einen", "auf", "mit", "dann", "ich",
            "wie", "nicht", "zu", "ins", "aus", "den", "dem", "vor"),
    chain=("dann", "danach", "anschließend", "schließlich", "zuletzt", "und", "außerdem", "auch", "sowie",
           "zum schluss"),
    actions=("beschreib*", "übersetz", "zusammenfass", "fass", "transkrib", "abschreib", "erkenn", "klassifizier",
             "zeichne*", "mal", "erstell", "erzeug", "lies", "vorles*", "sprich", "bearbeit", "änder", "vergleich",
             "beantwort", "schreib", "video", "bild", "audio", "tiefe", "pose"),
    tasks={
        "document-question-answering": ("dokument", "rechnung", "quittung", "beleg", "scan", "formular", "seite",
                                        "tabelle"),
        "image-to-text": ("beschreib*", "bildunterschrift*", "text auf", "text im"),
        "text-to-image": ("zeichne*", "male", "mal ein", "bild von", "bild eines", "bild einer", "illustration"),
        "text-to-video": ("video",),
        "text-to-speech": ("vorles*", "lies", "laut", "sprich", "stimme", "vorlesen"),
    },
    original=("original", "ursprünglich", "unbearbeitet", "eingangs"),
    picture=("bild", "foto", "aufnahme", "dokument", "rechnung", "scan", "seite"),
    makers=("erstell", "erzeug", "generier", "zeichne", "mal", "mach", "möchte", "will", "brauche"),
    media={"image": ("bild", "foto", "zeichnung", "illustration"), "video": ("video", "clip"),
           "audio": ("audio", "sprachaufnahme", "sprachausgabe")},
)
