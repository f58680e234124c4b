"""What a worker uses: the status store, the API client, token cache, classifier, pipeline,
sweeper; and the worker's entry point (`followup.worker.celery_app`)."""
