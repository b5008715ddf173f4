"""Trying and serving trained adapters: ``lladapt generate`` (one instruction, the evaluator's
generation code) and ``lladapt serve`` (one base model, any number of adapters, an
OpenAI-compatible HTTP API and a playground page). One module per job:

- :mod:`.spec`: what to serve (run folders, adapter folders, a YAML file of names)
- :mod:`.models`: the base loaded once, each adapter gated on it or on an instance of its own
- :mod:`.lanes`: the worker threads (continuous batching on the shared base; static batches)
- :mod:`.static_batch`: rows through ``generate`` (prefix and prompt tuning, beam search)
- :mod:`.text`: a row's text as it settles (stop strings, pieces that add up to the answer)
- :mod:`.answer`: one request from the event loop to a lane and back
- :mod:`.protocol`: OpenAI's request, response, chunk and error bodies
- :mod:`.app`: the FastAPI application; :mod:`.server`: uvicorn, SIGTERM, the exposure warning
- :mod:`.generate`: ``lladapt generate``

The batching engine itself is :mod:`lladapt.evaluation.continuous` (the evaluator can use it);
gating adapters per row is :mod:`lladapt.adapters.rows`. Nothing here is imported by ``lladapt
--help``: FastAPI, uvicorn and torch load when a command runs.
"""
