"""French words that are evidence for the planner (see :mod:`localgpt.planning.lexicon`)."""

from localgpt.planning.language import Lexicon

LEXICON = Lexicon(
    code="fr",
    common=("le", "la", "les", "et", "est", "de", "des", "du", "un", "une", "moi", "puis", "en", "sur", "dans",
            "qu", "que", "ce", "cette", "pour", "avec", "s'il", "vous", "plaît", "quel", "quelle"),
    chain=("puis", "ensuite", "après", "enfin", "finalement", "et", "aussi", "également"),
    actions=("décri*", "tradui", "résum", "transcri", "détect", "classe", "dessin*", "génèr", "crée", "créer",
             "li", "lire", "modifi", "compar", "répond", "écri", "vidéo", "image", "audio", "profondeur", "pose"),
    tasks={
        "document-question-answering": ("document", "facture", "reçu", "ticket", "scan", "formulaire", "page",
                                        "tableau"),
        "image-to-text": ("décri*", "légende", "description", "texte sur"),
        "text-to-image": ("dessin*", "peins", "illustr*", "image d", "une image", "photo d"),
        "text-to-video": ("vidéo",),
        "text-to-speech": ("à voix haute", "lis", "lire", "voix", "prononce"),
    },
    original=("original", "originale", "initial", "initiale", "d'origine"),
    picture=("image", "photo", "document", "facture", "scan", "page"),
    makers=("crée", "créer", "génère", "générer", "dessine", "fais", "faire", "produis", "veux", "voudrais"),
    media={"image": ("image", "photo", "illustration", "dessin"), "video": ("vidéo", "clip"),
           "audio": ("audio", "voix")},
)
