"""Row schemas of the synthesized corpora. Every row says where it came from: the source
pair, the generator (model id, revision, licence), the prompt (id, version), the sampling
settings and the seed of the attempt that passed validation."""

import pyarrow as pa

VERSION = 1

PROVENANCE = [
    ("item_id", pa.string()),
    ("pair_id", pa.string()),  # the source pair (web pair or dataset record)
    ("text", pa.string()),  # the training text: a caption, an answer, an option letter
    ("task", pa.string()),  # the prompt library's task name
    ("generator", pa.string()),  # its name in synthesis.generators
    ("model", pa.string()),
    ("revision", pa.string()),
    ("licence", pa.string()),
    ("prompt_id", pa.string()),
    ("prompt_version", pa.int32()),
    ("sampling", pa.string()),  # JSON of temperature, top_p, max_tokens, repetition_penalty
    ("seed", pa.int64()),
    ("attempt", pa.int32()),  # which try passed (1 = the first)
]

ENGLISH_CAPTIONS = pa.schema(PROVENANCE)
JA_CAPTIONS = pa.schema(PROVENANCE + [("length", pa.string()), ("reference_source", pa.string())])  # long | short; reference_text | caption
SYNTHETIC_VQA = pa.schema(PROVENANCE + [("target", pa.string()), ("question", pa.string())])  # text: the answer
SYNTHETIC_MCVQA = pa.schema(
    PROVENANCE + [("question", pa.string()), ("options", pa.list_(pa.string())), ("correct_answer", pa.string())]
)  # question: with A-D options; text: the right letter
TRANSLATED_PAIRS = pa.schema(PROVENANCE + [("kind", pa.string()), ("source_text", pa.string()), ("question", pa.string())])  # caption | qa
