"""Benchmark scoring with llm-jp-eval-mm 0.4.1 semantics (the tool the Asagi and
llm-jp-3 VILA scores were produced with)."""
