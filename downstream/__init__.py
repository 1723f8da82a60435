"""Downstream tasks on frozen upstreams: configs, feature cache, the training runner and the tasks."""
