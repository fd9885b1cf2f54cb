"""Library shared by the Spark jobs in ``jobs/``: storage, stage commits and the pure math."""
