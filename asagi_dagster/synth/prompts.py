"""Prompts: our own wording, versioned; each task's prompt is in its corpus's module
(``asagi_dagster/synth/corpora/``). A prompt's id and version are stored with every row
it produced, so bump ``version`` whenever the wording changes.

A prompt is a system message plus an instruction with ``{field}`` slots; few-shot
examples from the profile become earlier user/assistant turns of the same shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from asagi_dagster.engines import user_message


@dataclass(frozen=True)
class Prompt:
    id: str
    version: int
    system: str | None
    instruction: str  # str.format template over the item's fields

    def messages(
        self, fields: dict[str, str], few_shot: Sequence[dict[str, str]] = (), image: bool = False, image_placeholder: str | None = None
    ) -> list[dict]:
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


# The system message of the tasks that write Japanese about an image.
JA_SYSTEM = "あなたは画像の内容を正確な日本語の文章で説明する専門家です。"
