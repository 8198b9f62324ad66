"""Spanish words that are evidence for the planner (see :mod:`localgpt.planning.lexicon`)."""

from localgpt.planning.language import Lexicon

LEXICON = Lexicon(
    code="es",
    common=("el", "la", "los", "las", "y", "es", "de", "del", "un", "una", "luego", "en", "por", "favor", "qué",
            "que", "para", "con", "esta", "este", "me", "mi", "al", "lo"),
    chain=("luego", "después", "despues", "entonces", "finalmente", "por último", "y", "también", "además"),
    actions=("describ*", "traduc", "resum", "transcrib", "detect", "clasific", "dibuj*", "gener", "crea", "lee",
             "leer", "edit", "modific", "compar", "respond", "escrib", "vídeo", "video", "imagen", "audio",
             "profundidad", "pose"),
    tasks={
        "document-question-answering": ("documento", "factura", "recibo", "ticket", "escaneo", "escaneado",
                                        "formulario", "página", "tabla"),
        "image-to-text": ("describ*", "descripción", "pie de foto", "texto de"),
        "text-to-image": ("dibuj*", "pinta*", "ilustr*", "imagen de", "una imagen", "foto de"),
        "text-to-video": ("vídeo", "video"),
        "text-to-speech": ("en voz alta", "lee", "leer", "voz", "pronuncia"),
    },
    original=("original", "inicial"),
    picture=("imagen", "foto", "fotografía", "documento", "factura", "escaneo", "página"),
    makers=("crea", "genera", "dibuja", "haz", "hacer", "produce", "quiero", "necesito"),
    media={"image": ("imagen", "foto", "ilustración", "dibujo"), "video": ("vídeo", "video", "clip"),
           "audio": ("audio", "voz")},
)
