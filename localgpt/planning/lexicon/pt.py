"""Portuguese words that are evidence for the planner (see :mod:`localgpt.planning.lexicon`)."""

from localgpt.planning.language import Lexicon

LEXICON = Lexicon(
    code="pt",
    common=("o", "os", "as", "e", "é", "do", "da", "dos", "das", "um", "uma", "em", "no", "na", "qual", "quais",
            "para", "com", "me", "depois", "faça", "foto", "tudo", "bom", "dia", "numa", "num", "também"),
    chain=("depois", "em seguida", "então", "finalmente", "por fim", "e", "também"),
    actions=("descrev", "traduz", "resum", "transcrev", "detect", "classific", "desenh", "ger", "cri", "lê", "ler",
             "edit", "compar", "respond", "escrev", "vídeo", "imagem", "foto", "áudio", "profundidade", "pose"),
    tasks={
        "document-question-answering": ("documento", "fatura", "recibo", "digitalizad", "formulário", "página",
                                        "tabela"),
        "image-to-text": ("descrev*", "descrição", "legenda"),
        "text-to-image": ("desenh*", "pint*", "ilustr*", "imagem de", "uma imagem"),
        "text-to-video": ("vídeo", "video"),
        "text-to-speech": ("em voz alta", "leia", "lê", "voz"),
    },
    original=("original",),
    picture=("imagem", "foto", "fotografia", "documento", "fatura", "página"),
    makers=("cri", "ger", "desenh", "faça", "faz", "quero", "preciso"),
    media={"image": ("imagem", "foto", "ilustração", "desenho"), "video": ("vídeo", "video"),
           "audio": ("áudio", "voz")},
)
