"""Background work: a job queue in the database, worker processes, and what each job runs."""
