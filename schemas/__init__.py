"""Arrow schemas and the manifest format: the single source of truth for field names."""
