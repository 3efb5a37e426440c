"""soopervisor serve: poll a company's repositories and run every new commit (see docs).

config: server.yaml; poller: heads and mirrors; queue: jobs, claims and leases.
"""
