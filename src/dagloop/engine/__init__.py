"""The standalone engine: graphs of sync and async callables on one event loop."""
