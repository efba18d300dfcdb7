"""Stage mixtures and two-stage LLaVA training (Asagi): the prompt template, the model
built from stock transformers classes, the data loader, and a readable FSDP2 loop
launched by torchrun (``python -m asagi_dagster.train``)."""
