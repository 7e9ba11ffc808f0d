"""Serving, per API process: the micro-batcher, the engine that runs a loaded version, and the
served models with their hot swap."""
