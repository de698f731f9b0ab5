"""The Kubernetes runner: a job's workers as Kubernetes Jobs (specs.py), how a try ended from its pods' statuses
(statuses.py), and the runner that creates, watches and deletes them (runner.py). Only runner.py talks to a
cluster; the Kubernetes client is imported only when `pfs server --runner kubernetes` is chosen."""
