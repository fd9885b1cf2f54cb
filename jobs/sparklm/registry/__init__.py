"""Published models: registry versions and the latest pointer, the evaluation set, the model
card and the Hugging Face export. The top layer."""
