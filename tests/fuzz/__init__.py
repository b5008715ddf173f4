"""The fuzzed corpus (not test modules): for each kind of file lladapt reads, a hypothesis
strategy of broken (and some valid) inputs and a runner that feeds one to the ``lladapt`` command
in this process and checks the property every input must meet (:mod:`.cli_property`).
``tests/test_fuzz.py`` runs a few hundred cases with a fixed seed; ``benchmarks/fuzz_corpus.py``
runs thousands per family."""
