"""GitHub: the Action's entry point, the workflow generator and the REST client."""
