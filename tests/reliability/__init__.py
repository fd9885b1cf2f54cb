"""A package, so its test modules may share names with those of other folders
(``test_hostile_inputs`` is in tests/spark too)."""
