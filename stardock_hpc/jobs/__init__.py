"""Submitting and running jobs: requests, job scripts, the node wrapper, records."""
