"""Operations: what the DAG tasks call (``pipeline``), drift and model health, the stream drain, forgetting,
the experiment report, the local stack, the Airflow REST client and the demo.

The top of the library: may import every other package; only the CLI and the DAGs import it.
"""
