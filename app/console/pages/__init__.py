"""The console's pages, one module per group: login, tasks (with their versions and runs),
review (with try-it and explanations), clients.  `app/console/routes.py` puts them under /ui."""
