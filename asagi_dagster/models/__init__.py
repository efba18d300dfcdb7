"""Loading the models stages use, by profile role: Hugging Face ids or local folders in
the cluster, tiny models built here (random weights, a tokenizer trained on the spot)
for the embedded default and the tests."""
