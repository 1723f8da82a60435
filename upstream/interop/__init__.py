"""Reading and writing other toolkits' checkpoints (S3PRL, ...)."""
