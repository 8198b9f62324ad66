"""Hindi words that are evidence for the planner (see :mod:`localgpt.planning.lexicon`).

Hindi inflects its verbs ("पढ़ो", "पढ़ें", "पढ़कर") and writes vowel signs that are no word characters to
a regular expression, so entries match anywhere (:attr:`Lexicon.spaced` is false) and are stems long
enough to mean one thing ("बिल", a bill, is left out: it is also the start of "बिल्ली", a cat)."""

from localgpt.planning.language import Lexicon

LEXICON = Lexicon(
    code="hi",
    common=("का", "की", "के", "है", "और", "को", "में", "से", "करो", "करें", "एक"),
    chain=("फिर", "उसके बाद", "इसके बाद", "बाद में", "और", "अंत में", "आखिर में", "साथ ही", "करके", "कर के"),
    actions=("वर्णन", "अनुवाद", "सारांश", "संक्षेप", "लिखित", "ट्रांसक्राइब", "पहचान", "पता लगा", "वर्गीकृत",
             "बनाओ", "बनाएं", "बनाइए", "बना दो", "पढ़", "संपादित", "बदल", "तुलना", "जवाब", "उत्तर", "लिखो", "लिखें",
             "वीडियो", "चित्र", "तस्वीर", "छवि", "फोटो", "फ़ोटो", "ऑडियो", "आवाज़", "आवाज", "गहराई", "मुद्रा",
             "पोज़"),
    tasks={
        "document-question-answering": ("दस्तावेज़", "दस्तावेज", "रसीद", "चालान", "स्कैन", "फ़ॉर्म", "फॉर्म", "पृष्ठ",
                                        "पेज", "तालिका"),
        "image-to-text": ("वर्णन", "कैप्शन", "लिखा है", "लिखा हुआ"),
        "text-to-image": ("तस्वीर बना", "चित्र बना", "छवि बना", "चित्र खींच", "छवि उत्पन्न"),
        "text-to-video": ("वीडियो",),
        "text-to-speech": ("ज़ोर से", "जोर से", "पढ़कर सुना", "बोलकर", "आवाज़ में", "आवाज में"),
    },
    original=("मूल", "असली", "ओरिजिनल"),
    picture=("चित्र", "तस्वीर", "छवि", "फोटो", "फ़ोटो", "दस्तावेज़", "दस्तावेज", "रसीद", "स्कैन"),
    makers=("बना", "उत्पन्न", "तैयार कर", "खींच"),
    media={"image": ("चित्र", "तस्वीर", "छवि", "फोटो", "फ़ोटो"), "video": ("वीडियो",),
           "audio": ("ऑडियो", "आवाज़", "आवाज")},
    verb_last=True,
)
