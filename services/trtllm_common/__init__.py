"""What the inference service and the gateway share: the settings parser and JSON logging."""
