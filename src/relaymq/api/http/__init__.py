"""The REST API under ``/v1``: one module per resource, plus its schemas and errors."""
