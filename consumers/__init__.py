"""redis-bus daemons: the queue worker and the pub/sub subscriber (``python -m consumers``)."""
