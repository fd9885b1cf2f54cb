"""The job runtime: entry point and exit codes, storage through fsspec, stage manifests,
ownership markers, allow-lists and fault injection. Imports nothing above it."""
