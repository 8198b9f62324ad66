"""Korean words that are evidence for the planner (see :mod:`localgpt.planning.lexicon`).

Korean joins its particles and endings to the words ("사진을", "그려 줘"), so entries match anywhere
(:attr:`Lexicon.spaced` is false) and are stems long enough to mean one thing."""

from localgpt.planning.language import Lexicon

LEXICON = Lexicon(
    code="ko",
    common=("을", "를", "이", "가", "은", "는", "에", "의", "줘", "주세요", "해"),
    chain=("그리고", "그 다음", "그다음", "다음에", "그런 다음", "그런다음", "그 후", "그후", "한 후", "마지막으로",
           "하고", "해서", "또한"),
    actions=("설명", "번역", "요약", "받아쓰", "받아 적", "전사", "텍스트로", "인식", "감지", "탐지", "분류", "그려",
             "그림", "생성", "만들", "읽어", "낭독", "편집", "수정", "바꿔", "비교", "대답", "답해", "작성", "동영상",
             "영상", "비디오", "이미지", "사진", "음성", "오디오", "깊이", "자세", "포즈"),
    tasks={
        "document-question-answering": ("문서", "서류", "영수증", "청구서", "송장", "스캔", "양식", "페이지"),
        "image-to-text": ("설명", "캡션", "묘사", "적힌", "써 있는", "쓰여"),
        "text-to-image": ("그려", "그림을 그", "그리기", "일러스트", "이미지를 생성", "이미지를 만들", "이미지 생성"),
        "text-to-video": ("동영상", "영상", "비디오"),
        "text-to-speech": ("읽어", "소리 내", "소리내", "낭독", "음성으로", "목소리"),
    },
    original=("원본", "원래"),
    picture=("이미지", "사진", "그림", "문서", "서류", "영수증", "청구서", "스캔"),
    makers=("만들", "생성", "그려", "그리기", "그릴", "제작"),  # not 그리 alone: it starts 그리고, "and"
    media={"image": ("그림", "이미지", "사진", "일러스트"), "video": ("동영상", "영상", "비디오"),
           "audio": ("음성", "오디오")},
    verb_last=True,
)
