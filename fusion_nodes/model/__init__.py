"""The gated fusion network: torch model, dataset, training, export and evaluation."""
