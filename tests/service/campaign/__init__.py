"""The fault-injection campaign's harness: service processes, a process-table sampler, the
MLflow view of a sweep, a TCP balancer and a scratch Postgres database."""
