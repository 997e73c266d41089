"""Schema-guided models: they read an SGD service's schema (its slots' names and descriptions) instead of knowing the
service by name, so a service that training never saw is served under its own names without retraining."""
