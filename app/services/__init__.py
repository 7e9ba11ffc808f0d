"""The domain services, one module per noun.  They take plain arguments, return plain values,
raise `app.core.errors` and know nothing of HTTP; each public function is its own unit of work."""
