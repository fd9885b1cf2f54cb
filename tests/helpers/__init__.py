"""Helpers the tests share, one module per kind: paths, jobs, corpora and oracles."""
