"""The Asagi prompt: the chat template saved with the model renders the training
strings byte for byte, and only the answer (with its EOS) is trained."""

from asagi_dagster.train.data import IGNORE, Encoder
from asagi_dagster.train.model import image_token_count
from asagi_dagster.train.template import PREAMBLE, chat_messages, prompt_text, training_text
from tests.train.helpers import example, start_model


def test_saved_chat_template_renders_the_training_strings_byte_for_byte(tmp_path):
    from transformers import AutoProcessor

    model, processor = start_model()
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)  # what inference will use
    eos = loaded.tokenizer.eos_token
    for instruction, response in [("この画像を説明してください。", "赤い花です。"), ("質問\n二行目", "A"), ("", " 先頭に空白\n\n")]:
        prompt, target = training_text(instruction, response, eos)
        rendered = loaded.apply_chat_template(chat_messages(instruction, response), tokenize=False)
        assert rendered == prompt + target
        generation = loaded.apply_chat_template(chat_messages(instruction), tokenize=False, add_generation_prompt=True)
        assert generation == prompt
    assert prompt_text("Q") == f"{PREAMBLE}\n\n### 指示:\n<image>\nQ\n\n### 応答:\n"
    # A system message replaces the preamble, as Asagi's inference code allows.
    system = [{"role": "system", "content": "SYS"}, *chat_messages("Q", "A")]
    assert loaded.apply_chat_template(system, tokenize=False) == f"SYS\n\n### 指示:\n<image>\nQ\n\n### 応答:\nA{eos}"


def test_only_the_answer_and_its_eos_are_trained():
    model, processor = start_model()
    encoder = Encoder(processor, image_token_count(model.config), max_text_tokens=256)
    row = example(1)
    encoded = encoder.encode(row)
    tokenizer = processor.tokenizer
    trained = [t for t, label in zip(encoded.input_ids, encoded.labels) if label != IGNORE]
    assert tokenizer.decode(trained) == tokenizer.decode(tokenizer(row["response"] + tokenizer.eos_token, add_special_tokens=False)["input_ids"])
    assert trained[-1] == tokenizer.eos_token_id
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    image_positions = [i for i, t in enumerate(encoded.input_ids) if t == image_id]
    assert len(image_positions) == image_token_count(model.config) == 16  # one per 8 px patch of 32 px
    assert all(encoded.labels[i] == IGNORE for i in image_positions)
    # Everything before the answer is the prompt the processor would build at inference.
    prompt_len = encoded.labels.index(next(label for label in encoded.labels if label != IGNORE))
    text = prompt_text(row["instruction"])
    expected = processor(text=text, images=[encoded.image], return_tensors="pt")["input_ids"][0].tolist()
    assert encoded.input_ids[:prompt_len] == expected


def test_a_long_answer_is_cut_never_the_image():
    model, processor = start_model()
    short = Encoder(processor, image_token_count(model.config), max_text_tokens=40)
    encoded = short.encode({**example(2), "response": "長い答え" * 200})
    assert len(encoded.input_ids) == 40 - 1 + 16  # the image token became 16
    assert encoded.input_ids.count(processor.tokenizer.convert_tokens_to_ids("<image>")) == 16
