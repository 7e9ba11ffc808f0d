"""`flywheel simulate`: proof that the loop learns.

Simulated users talk to a real Flywheel (API and worker processes, a fresh database per arm)
over HTTP only: they predict a slice of traffic, judge each answer against the gold label,
send +1 / -1 (and sometimes the right label), and the simulator retrains, waits for the gate
and scores the active version on a held-out test set after every round.

Modules, one job each:
  data      the traffic and test sets of one scenario, read through app/tools/datasets.py
  users     what a simulated user says about one answer (pure, seeded per text)
  arms      the experiment arms and how the task and users are set up for each
  server    the API and worker processes of one arm (app/process/launch.py), talked to with app/tools/client.py
  runner    one arm end to end, and all arms in turn (each once per seed)
  result    the typed result: rounds, each seed's run, each arm's means over seeds; its JSON
  checks    the issue's targets (and the gate's decisions), measured on a result
  combine   several results, one per seed, as one
  report    markdown and PNG plots from a result
  progress  the rich progress bar on a terminal, plain lines in a log
  command   the typer command
"""
