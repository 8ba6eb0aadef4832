"""Survival models: the competing-risks forest, the baselines and their explanations."""
