"""Remotes: places other than this machine that run a commit (a team server, GitHub Actions); see base.py."""
