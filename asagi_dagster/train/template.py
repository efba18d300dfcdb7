"""The Asagi prompt: Alpaca-style ``### 指示:`` / ``### 応答:`` sections, the image token
at the head of the instruction, loss on the response only. The bytes are those of the
Asagi model cards' usage example (and llm-jp-3-instruct's own template, plus the image).

``training_text`` builds the strings the trainer tokenizes; ``TRAINING_CHAT_TEMPLATE`` is saved
with the model so ``apply_chat_template`` at inference renders the same bytes (a test
holds the two together, since Jinja templates can silently eat newlines).
"""

IMAGE_TOKEN = "<image>"
PREAMBLE = "以下は、タスクを説明する指示です。要求を適切に満たす応答を書きなさい。"
INSTRUCTION_HEADER = "\n\n### 指示:\n"
RESPONSE_HEADER = "\n\n### 応答:\n"

# Rendered by transformers with trim_blocks and lstrip_blocks, so all newlines live in
# string literals. A system message replaces the preamble; each assistant turn ends
# with the EOS token, which is what teaches the model to stop.
TRAINING_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}{% set turns = messages[1:] %}"
    "{% else %}{{ '" + PREAMBLE + "' }}{% set turns = messages %}{% endif %}"
    "{% for message in turns %}"
    "{% if message['role'] == 'user' %}{{ '\\n\\n### 指示:\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '" + IMAGE_TOKEN + "\\n' }}{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% elif message['role'] == 'assistant' %}{{ '\\n\\n### 応答:\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{{ part['text'] }}{% endfor %}{% endif %}{{ eos_token }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '\\n\\n### 応答:\\n' }}{% endif %}"
)

# Asagi-style paraphrases of "describe the image"; an example's is fixed by its id.
CAPTION_INSTRUCTIONS = {
    "short": (
        "この画像を簡潔に説明してください。",
        "画像の内容を一文で説明してください。",
        "この画像に何が写っているか短く答えてください。",
    ),
    "long": (
        "この画像を詳しく説明してください。",
        "画像に写っているものを、できるだけ具体的に説明してください。",
        "この画像の内容について詳細に述べてください。",
    ),
}
MCVQA_SUFFIX = "選択肢の中から最も適切なものを選び、記号で答えてください。"


def prompt_text(instruction: str, image: bool = True) -> str:
    """Everything before the response: what the model is conditioned on, never trained on."""
    return PREAMBLE + INSTRUCTION_HEADER + (IMAGE_TOKEN + "\n" if image else "") + instruction + RESPONSE_HEADER


def training_text(instruction: str, response: str, eos_token: str) -> tuple[str, str]:
    """(prompt, target): their concatenation is the training string; loss is on target only."""
    return prompt_text(instruction), response + eos_token


def mcvqa_instruction(question_with_options: str) -> str:
    return question_with_options + "\n" + MCVQA_SUFFIX


def chat_messages(instruction: str, response: str | None = None) -> list[dict]:
    """The same example as chat messages, for ``apply_chat_template``."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]
    if response is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": response}]})
    return messages
