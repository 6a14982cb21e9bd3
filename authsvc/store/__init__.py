"""Every SQL statement of the service, one module per table; callers own the transactions."""
