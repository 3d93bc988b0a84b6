"""The pipeline's stages, one module each: `run(params, inputs..., outputs...) -> metrics`.

No Prefect and no DVC in here: DVC calls them through the `finpipe` CLI, Prefect through DVC.
"""
