"""Training runs, start to end: enqueue and claim (`lifecycle`), execute in named steps
(`execute`), heartbeat (`heartbeat`), reap and requeue (`lifecycle`), and when the retrain
policy says a task is due (`schedule`).  `app/process/worker.py` only schedules these; nothing here
knows HTTP.
"""
