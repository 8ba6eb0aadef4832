"""The BentoML risk-scoring API, its request/response schemas, audit log and commands."""
