"""Prefect orchestration of the DVC pipeline (`flows.pipeline`)."""
