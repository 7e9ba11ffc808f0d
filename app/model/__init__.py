"""The model below every task kind: a Hugging Face encoder plus a kind's head, and the store
that keeps each version on disk."""
