"""Coverage-guided fuzzing (atheris) of the decoders that read untrusted bytes; run by test_fuzz.py."""
