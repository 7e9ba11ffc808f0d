"""The console: server-rendered pages (Jinja2) over the same services as the API, at /ui.

routes.py puts the groups of pages (pages/) under one router; render.py renders a page and turns
an error into one; deps.py says who may see a page; session.py keeps sessions and CSRF tokens."""
