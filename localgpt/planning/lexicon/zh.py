"""Chinese words that are evidence for the planner (see :mod:`localgpt.planning.lexicon`)."""

from localgpt.planning.language import Lexicon

LEXICON = Lexicon(
    code="zh",
    common=("的", "了", "把", "这", "一下", "请", "我", "是", "吗", "和", "张", "个"),
    chain=("然后", "再", "接着", "之后", "最后", "并且", "同时", "以后"),
    actions=("描述", "翻译", "总结", "摘要", "转成文字", "转写", "识别", "检测", "分类", "画", "生成", "读",
             "朗读", "编辑", "修改", "比较", "回答", "写", "视频", "图片", "图像", "照片", "语音", "音频", "深度",
             "姿势", "姿态"),
    tasks={
        "document-question-answering": ("文档", "文件", "发票", "收据", "扫描", "表格", "表单", "页"),
        "image-to-text": ("描述", "说明", "标题", "上的文字", "里的文字"),
        "text-to-image": ("画", "绘制", "生成一张", "图片", "插图"),
        "text-to-video": ("视频",),
        "text-to-speech": ("读出来", "朗读", "念", "语音", "读给"),
    },
    original=("原图", "原始", "原来的", "原"),
    picture=("图片", "图像", "照片", "相片", "图", "文档", "发票", "收据", "扫描"),
    makers=("生成", "画", "做", "制作", "创建", "创作"),
    media={"image": ("图", "照片", "插画"), "video": ("视频",), "audio": ("语音", "音频")},
)
