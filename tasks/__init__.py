"""The DVC stages, one module each and nothing else: `run(params, inputs..., outputs...) ->
metrics`. DVC calls them through the `finpipe` CLI (dvc.yaml), Prefect through DVC; the code
they share lives in `finpipe`."""
