"""Tailor's core: workspace and database, model resolution and loading, the chat engine,
prompt building and the conversation log. Imports none of tuning/retrieval/evals/ui."""

from . import openmp

# Before anything imports torch: libgomp reads how its threads wait once, when torch loads it.
openmp.configure()
