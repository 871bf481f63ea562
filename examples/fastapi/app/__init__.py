"""Orders: the guide's asynchronous FastAPI service, handing its background work to Spool."""
