"""The retraining job: metrics, validation, tuning, MLflow logging, registry, promotion."""
