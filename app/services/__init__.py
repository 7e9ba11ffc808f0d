"""The domain services, one module per noun: they raise `app.core.errors` and know nothing of HTTP.

Every public function has one of three shapes:

1. A unit of work, what a route, a console page or the CLI calls: `f(state: AppState, *, ...)`.
   The process's state (`app/process/state.py`: sessions, settings, served models, batchers,
   metrics) is the first and only positional argument, everything else is keyword-only, and it
   opens and closes its own sessions.  It returns plain data (dicts, lists of them, dataclasses,
   tuples of those), never ORM rows, so no caller touches a row after its session has closed.
   Settings a unit of work needs (`max_text_chars`, `max_training_rows`) it reads from the
   state.  `batcher_for` and `served_model` take the state for the same reason: what they hand
   back (a task's batcher, its loaded model) lives in it.
2. A building block that runs inside a caller's open transaction: `f(session: Session, *, ...)`,
   e.g. `load_task`, `counts`, `describe`, `describe_client`, `labelled_counts`,
   `read_ask_stats`, `noise_of_rows`.
3. A pure helper, with no state and no session: validation (`check_texts`, `parse_csv`,
   `validate_rows`, `allow`), the errors several services raise (`unknown_prediction`,
   `database_outage`, `user_erased`), `describe_version`, `build_version_zero`; arguments after
   the first are keyword-only.

Exceptions, each saying why in its docstring: `feedback.record_signals` and
`predictions.make_commit` take a sessionmaker, because they are the commit steps of the
feedback group commit and of the micro-batcher, called with a batch by machinery that holds no
AppState."""
