"""The GPT and how it learns and speaks: model, memory estimate, optimizers, averaging,
training, decoding, weights, evaluation and plots. Imports data and runtime."""
