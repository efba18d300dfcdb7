"""The reference-text stage's settings (the profile's ``reference_texts``)."""

from __future__ import annotations

from pydantic import Field

from asagi_dagster.settings import Strict


class ReferenceTextSettings(Strict):
    """How a page's main text becomes candidate sentences for its images."""

    min_extracted_chars: int = Field(20, ge=1, description="trafilatura's MIN_EXTRACTED_SIZE: below it, it flattens the whole page.")
    min_sentence_chars: int = Field(5, ge=1)
    max_sentence_chars: int = Field(300, ge=1)
    scorer_role: str = Field("reference_scorer", description="The models entry that scores sentences against images (a Japanese CLIP).")
    allow_hub: bool = Field(False, description="Let the scorer download from the Hugging Face hub (cluster only).")
    trust_remote_code: bool = Field(False, description="Needed by models with their own code, e.g. line-corporation/clip-japanese-base.")
    runner_ups: int = Field(3, ge=0, description="How many next-best scores to keep beside the best.")
