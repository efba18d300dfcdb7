"""Validation on hand-written outputs, good and bad, as a Japanese LLM might write them."""

from collections import Counter

import pytest

from asagi_dagster.synth.corpora import PROMPTS, TASKS
from asagi_dagster.synth.settings import TaskSettings
from asagi_dagster.synth.tasks import Item
from asagi_dagster.synth.validate import Invalid, multiple_choice, parse_distractors, parse_vqa

SETTINGS = TaskSettings(generator="g", min_chars=10, max_chars=200)
ITEM = Item("p1#long", "p1", {})


def reason(task: str, text: str, item: Item = ITEM, settings: TaskSettings = SETTINGS) -> str | None:
    try:
        TASKS[task].check(text, item, 7, settings)
    except Invalid as invalid:
        return invalid.reason
    return None


def test_a_good_japanese_caption_passes_and_is_stripped():
    text = "  木製のテーブルの上に、白いカップに入ったコーヒーが置かれています。カップの横には小さなスプーンがあります。\n"
    assert TASKS["ja_caption_long"].check(text, ITEM, 7, SETTINGS) == {"text": text.strip()}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "empty"),
        ("猫です。", "too_short"),
        ("猫" * 201, "too_long"),
        ("A white cup of coffee is on a wooden table with a spoon.", "not_japanese"),
        ("看板には「本日休業」と書かれており、店の前に自転車が止まっています。", "mentions_image_text"),
        ("店の入口に「さくら書店」というロゴがあり、棚に本が並んでいます。", "mentions_image_text"),
        ("画像の中のテキストが表示されており、青い空が広がっています。", "mentions_image_text"),
        ("<|assistant|>\n白いカップに入ったコーヒーがテーブルの上にあります。", "prompt_echo"),
        ("画像に写っていないことは付け加えず、画像の中に書かれた文字には触れないでください。", "prompt_echo"),
    ],
)
def test_bad_captions_are_rejected_with_their_reason(text, expected):
    assert reason("ja_caption_long", text) == expected


def test_english_caption_must_be_english():
    assert reason("english_caption", "A white cup of coffee sits on a wooden table next to a small spoon.") is None
    assert reason("english_caption", "木製のテーブルの上に白いカップに入ったコーヒーがあります。") == "not_english"
    assert reason("english_caption", 'A shop front with a sign that reads "OPEN" above the door.') == "mentions_image_text"


def test_vqa_needs_its_three_labelled_lines():
    good = "質問対象: カップ\n質問: テーブルの上のカップには何が入っていますか？\n回答：コーヒーが入っています。"
    assert parse_vqa(good) == ("カップ", "テーブルの上のカップには何が入っていますか？", "コーヒーが入っています。")
    assert TASKS["vqa"].check(good, ITEM, 7, SETTINGS)["question"].startswith("テーブル")
    for bad in [
        "質問: カップには何が入っていますか？\n回答: コーヒーです。",  # no target
        "質問対象: カップ\n回答: コーヒーです。\n質問: 何が入っていますか？",  # out of order
        "質問対象: カップ\n質問:\n回答: コーヒーです。",  # empty question
    ]:
        with pytest.raises(Invalid) as caught:
            parse_vqa(bad)
        assert caught.value.reason == "bad_format"


def test_distractors_must_differ_from_the_answer_and_each_other():
    assert parse_distractors("誤答1: 紅茶\n誤答2: 牛乳\n誤答3: オレンジジュース", "コーヒー") == ["紅茶", "牛乳", "オレンジジュース"]
    cases = {
        "誤答1: 紅茶\n誤答2: コーヒー。\n誤答3: 水": "option_matches_answer",
        "誤答1: 紅茶\n誤答2: ホットコーヒー\n誤答3: 水": "option_matches_answer",  # contains the answer
        "誤答1: 紅茶\n誤答2: 紅 茶\n誤答3: 水": "options_repeat",
        "誤答1: 紅茶\n誤答2: 水": "bad_format",
    }
    for text, expected in cases.items():
        with pytest.raises(Invalid) as caught:
            parse_distractors(text, "コーヒー")
        assert caught.value.reason == expected, text


def test_multiple_choice_places_the_answer_by_seed_uniformly_and_reproducibly():
    question, options, letter = multiple_choice("何が入っていますか？", "コーヒー", ["紅茶", "牛乳", "水"], seed=3)
    assert options["ABCD".index(letter)] == "コーヒー" and sorted(options) == sorted(["コーヒー", "紅茶", "牛乳", "水"])
    assert question.splitlines()[1:] == [f"{letter}. {option}" for letter, option in zip("ABCD", options)]
    assert multiple_choice("q", "a", ["b", "c", "d"], seed=3)[2] == multiple_choice("q", "a", ["b", "c", "d"], seed=3)[2]
    counts = Counter(multiple_choice("q", "a", ["b", "c", "d"], seed=s)[2] for s in range(400))
    assert set(counts) == set("ABCD") and min(counts.values()) > 70


def test_mcvqa_task_builds_the_question_from_the_item():
    item = Item("p1", "p1", {"question": "カップには何が入っていますか？", "answer": "コーヒー"})
    row = TASKS["mcvqa"].check("誤答1: 紅茶\n誤答2: 牛乳\n誤答3: 水", item, 11, TaskSettings(generator="g", min_chars=1))
    assert row["question"].startswith("カップには何が入っていますか？\nA. ")
    assert row["options"]["ABCD".index(row["text"])] == "コーヒー"


def test_prompts_fill_their_slots_and_put_few_shot_turns_first():
    few_shot = [{"ja_caption": "赤い車が走っています。", "output": "質問対象: 車\n質問: 車は何色ですか？\n回答: 赤です。"}]
    messages = PROMPTS["vqa"].messages({"ja_caption": "白い猫が寝ています。"}, few_shot)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert "赤い車" in messages[1]["content"] and "白い猫" in messages[3]["content"]
    image = PROMPTS["ja_caption_long"].messages({"english_caption": "a cat", "reference_text": "タマ"}, image=True)[-1]["content"]
    assert image[0] == {"type": "image"} and "タマ" in image[1]["text"]
    assert (
        PROMPTS["ja_caption_long"]
        .messages({"english_caption": "a", "reference_text": "b"}, image=True, image_placeholder="<|image_1|>")[-1]["content"]
        .startswith("<|image_1|>\n")
    )


def test_translations_keep_their_source_length_and_qa_keeps_its_labels():
    english = "A white cup of coffee on a wooden table, with a small spoon beside it."
    caption = Item("d/row0", "d/row0", {"english": english}, carry={"kind": "caption", "source_text": english})
    good = "木製のテーブルの上に白いコーヒーカップがあり、横に小さなスプーンが置かれている。"
    assert TASKS["translation"].check(good, caption, 1, SETTINGS) == {"text": good}
    rambling = good + "窓の外では雨が降っていて、店内には静かな音楽が流れている。" * 3  # content the source does not have
    assert reason("translation", rambling, caption) == "length_mismatch"
    assert reason("translation", "コーヒーです。", caption, TaskSettings(generator="g", min_chars=2)) == "length_mismatch"
    source = "質問: What colour is the cup?\n回答: It is white."
    qa = Item("d/row1", "d/row1", {"english": source}, carry={"kind": "qa", "source_text": source})
    assert TASKS["translation"].check("質問: カップは何色ですか？\n回答: 白です。", qa, 1, TaskSettings(generator="g", min_chars=2)) == {
        "question": "カップは何色ですか？",
        "text": "白です。",
    }
    assert reason("translation", "カップは何色ですか？白です。", qa, TaskSettings(generator="g", min_chars=2)) == "bad_format"
