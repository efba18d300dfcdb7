"""The prompt library: our own wording, versioned. A prompt's id and version are stored
with every row it produced, so bump ``version`` whenever the wording changes.

A prompt is a system message plus an instruction with ``{field}`` slots; few-shot
examples from the profile become earlier user/assistant turns of the same shape.
"""

from __future__ import annotations

from dataclasses import dataclass

from asagi_dagster.engines import user_message


@dataclass(frozen=True)
class Prompt:
    id: str
    version: int
    system: str | None
    instruction: str  # str.format template over the item's fields

    def messages(self, fields: dict[str, str], few_shot: list[dict[str, str]] = (), image: bool = False, image_placeholder: str | None = None) -> list[dict]:
        """Chat messages for one item. With ``image`` the last user turn carries the image:
        as an image content part, or as ``image_placeholder`` text for chat templates
        that only take strings."""
        messages: list[dict] = [{"role": "system", "content": self.system}] if self.system else []
        for example in few_shot:
            messages.append({"role": "user", "content": self.instruction.format(**example)})
            messages.append({"role": "assistant", "content": example["output"]})
        messages.append(user_message(self.instruction.format(**fields), image, image_placeholder))
        return messages

    def echo_markers(self) -> list[str]:
        """Lines of our own wording long enough that an output containing one is echoing
        the prompt rather than answering it."""
        fixed = [part for part in self.instruction.replace("{", "\n{").replace("}", "}\n").splitlines() if "{" not in part]
        lines = [line.strip() for line in fixed + (self.system or "").splitlines()]
        return [line for line in lines if len(line) >= 12]


ENGLISH_CAPTION = Prompt(
    id="english_caption",
    version=1,
    system=None,
    instruction=(
        "Describe this image in detail in English, as one paragraph of plain prose.\n"
        "Cover the main subject, what surrounds it, colours, counts, positions and any actions.\n"
        "Do not read out or mention any text, letters or logos written in the image."
    ),
)

_JA_SYSTEM = "あなたは画像の内容を正確な日本語の文章で説明する専門家です。"

_JA_CAPTION_SOURCES = (
    "同じ画像について、二つの情報があります。\n"
    "【英語の説明】画像に写っているものについては、こちらを信頼してください。\n"
    "{english_caption}\n"
    "【参考テキスト】固有名詞（地名、人名、商品名など）については、こちらを信頼してください。\n"
    "{reference_text}\n"
)

JA_CAPTION_LONG = Prompt(
    id="ja_caption_long",
    version=1,
    system=_JA_SYSTEM,
    instruction=(
        _JA_CAPTION_SOURCES + "この二つをもとに、画像を詳しく説明する自然な日本語の文章を書いてください。\n"
        "画像に写っていないことは付け加えず、画像の中に書かれた文字には触れないでください。\n"
        "説明文だけを出力してください。"
    ),
)

JA_CAPTION_SHORT = Prompt(
    id="ja_caption_short",
    version=1,
    system=_JA_SYSTEM,
    instruction=(
        _JA_CAPTION_SOURCES + "この二つをもとに、画像を一文で簡潔に説明する日本語の文を書いてください。\n"
        "画像に写っていないことは付け加えず、画像の中に書かれた文字には触れないでください。\n"
        "説明文だけを出力してください。"
    ),
)

VQA = Prompt(
    id="vqa",
    version=1,
    system=_JA_SYSTEM,
    instruction=(
        "次の文章は、ある画像の詳しい説明です。\n"
        "{ja_caption}\n"
        "この画像について、質問と回答を一組作ってください。\n"
        "まず質問の対象（画像の中の物、人、場所など）を一つ決め、説明文から答えが分かる質問を書き、説明文だけに基づいて答えてください。\n"
        "画像の中に書かれた文字についての質問は作らないでください。\n"
        "次の形式で出力してください。\n"
        "質問対象: （対象）\n"
        "質問: （質問）\n"
        "回答: （回答）"
    ),
)

MCVQA = Prompt(
    id="mcvqa",
    version=1,
    system=_JA_SYSTEM,
    instruction=(
        "次の文章は、ある画像の詳しい説明です。\n"
        "{ja_caption}\n"
        "この画像についての質問と正しい答えは次のとおりです。\n"
        "質問: {question}\n"
        "正解: {answer}\n"
        "多肢選択問題にするため、正解とははっきり異なる誤った選択肢を三つ作ってください。\n"
        "正解と同じ意味の言い換えや、正解とも言えるものは避け、正解と同じくらいの長さにしてください。\n"
        "次の形式で出力してください。\n"
        "誤答1: （選択肢）\n"
        "誤答2: （選択肢）\n"
        "誤答3: （選択肢）"
    ),
)

TRANSLATION = Prompt(
    id="translation",
    version=1,
    system="あなたは英語から日本語への翻訳者です。",
    instruction=(
        "次の英語を自然な日本語に翻訳してください。\n"
        "「質問:」「回答:」の見出しがあれば、見出しは日本語のまま残してください。\n"
        "翻訳だけを出力してください。\n"
        "{english}"
    ),
)

PROMPTS = {prompt.id: prompt for prompt in (ENGLISH_CAPTION, JA_CAPTION_LONG, JA_CAPTION_SHORT, VQA, MCVQA, TRANSLATION)}
