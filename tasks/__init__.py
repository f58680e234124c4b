"""The request model, the producer API and the Celery task `followup.place_call`.

Import the public API from `followup` itself (`from followup import enqueue_follow_up`).
"""
