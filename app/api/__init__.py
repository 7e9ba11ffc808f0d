"""HTTP: routes that parse, call one service function and shape the answer; the mapping of
domain errors to problem+json; the dependencies (state, caller)."""
