"""Japanese words that are evidence for the planner (see :mod:`localgpt.planning.lexicon`)."""

from localgpt.planning.language import Lexicon

LEXICON = Lexicon(
    code="ja",
    common=("の", "を", "に", "は", "て", "ください", "です", "して", "が", "と", "で"),
    chain=("してから", "それから", "その後", "そのあと", "次に", "最後に", "そして", "また", "て、", "して、"),
    actions=("説明", "翻訳", "要約", "まとめ", "文字起こし", "書き起こし", "認識", "検出", "分類", "描い",
             "描いて", "生成", "読み上げ", "読んで", "編集", "比較", "答え", "書い", "動画", "ビデオ", "画像",
             "写真", "音声", "深度", "ポーズ"),
    tasks={
        "document-question-answering": ("書類", "文書", "請求書", "領収書", "レシート", "スキャン", "表",
                                        "ページ"),
        "image-to-text": ("説明", "キャプション", "文字を読", "書かれて"),
        "text-to-image": ("描い", "描く", "絵を", "イラスト", "画像を生成", "画像を作"),
        "text-to-video": ("動画", "ビデオ"),
        "text-to-speech": ("読み上げ", "音読", "声で", "音声にし"),
    },
    original=("元の", "オリジナル", "元画像"),
    picture=("画像", "写真", "絵", "書類", "文書", "請求書", "領収書", "レシート", "スキャン"),
    # not 作 or 描 alone: 作者 is an author, 動作 a movement, 描写 a description
    makers=("作っ", "作る", "作れ", "作り", "作成", "生成", "描い", "描く", "描け", "描き"),
    media={"image": ("画像", "絵", "イラスト"), "video": ("動画", "ビデオ"), "audio": ("音声",)},
    verb_last=True,
)
