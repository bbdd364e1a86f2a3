"""Property-based fuzzing of the CLI contract (hypothesis).

Models, calibration files and recipes are mutated, every verb is run on them in-process, and the
contract of :mod:`tests.fuzz.contract` is asserted: exit 0 or 2 (3 only for fidelity gates), one
stderr line on failure, inputs byte-identical, the output absent or runnable in onnxruntime, nothing
left behind. ``ONNXPRUNE_FUZZ_EXAMPLES=N`` runs N examples per test (the default fits CI).
"""
