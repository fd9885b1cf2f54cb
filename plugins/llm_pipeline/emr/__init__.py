"""EMR mode: the code bundle and its steps, the cluster definition, the tasks that create it."""
