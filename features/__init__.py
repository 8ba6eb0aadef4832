"""Patient record -> validated record -> feature vector; the cohort contract; synthetic data."""
