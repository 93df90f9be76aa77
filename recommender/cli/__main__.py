"""``python -m recommender.cli``: the same as the ``recsys`` command."""

from recommender.cli import app

app()
