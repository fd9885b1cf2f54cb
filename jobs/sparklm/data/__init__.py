"""Corpus to tokens: sources and readers, cleaning, hold-out, document shards, the BPE
tokenizer and token shards. Imports only the runtime."""
