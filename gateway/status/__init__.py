"""The HTTP status endpoint: a page, a JSON status, Prometheus metrics and a health check."""
