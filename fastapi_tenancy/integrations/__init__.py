"""Optional integrations with other libraries; each module imports its library, so import the
one you use (``fastapi_tenancy.integrations.celery``), never this package's siblings blindly."""
