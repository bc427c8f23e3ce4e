"""A Django database backend: PostgreSQL, started on this machine the first time a process connects."""
