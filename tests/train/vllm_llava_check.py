"""Run in .venv-vllm: vLLM loads an exported model folder (Llava, image input) and its
greedy tokens equal transformers'; then, in the same process (one vLLM start, not two),
it tries a folder it should refuse. Prints one JSON line."""

import json
import sys

if __name__ == "__main__":  # vLLM starts worker processes that import the main module
    from PIL import Image
    from transformers import AutoProcessor, LlavaForConditionalGeneration
    from vllm import LLM, SamplingParams

    folder, refused_folder = sys.argv[1:3]
    processor = AutoProcessor.from_pretrained(folder)
    image = Image.new("RGB", (50, 40), (200, 30, 90))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "この画像を説明してください。"}]}]
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    settings = {"dtype": "float32", "enforce_eager": True, "max_model_len": 512, "gpu_memory_utilization": 0.2, "limit_mm_per_prompt": {"image": 1}}
    llm = LLM(model=folder, **settings)
    out = llm.generate([{"prompt": prompt, "multi_modal_data": {"image": image}}], SamplingParams(max_tokens=8, temperature=0, ignore_eos=True))[0]
    inputs = processor(text=prompt, images=[image], return_tensors="pt")
    model = LlavaForConditionalGeneration.from_pretrained(folder).eval()
    reference = model.generate(**inputs, max_new_tokens=8, min_new_tokens=8, do_sample=False)[0, inputs["input_ids"].shape[1] :].tolist()
    del llm  # its engine process ends: the second load gets the memory back
    try:
        LLM(model=refused_folder, **settings)
        refusal = ""
    except Exception as error:  # the engine process's own error, with its traceback, went to stderr
        refusal = f"{type(error).__name__}: {error}"
    print(
        "RESULT "
        + json.dumps(
            {
                "prompt_ids_equal": list(out.prompt_token_ids) == inputs["input_ids"][0].tolist(),
                "vllm": list(out.outputs[0].token_ids),
                "transformers": reference,
                "refusal": refusal,
            }
        ),
        flush=True,
    )
