"""Small helpers shared by the report tests."""


def without_seconds(x):
    """``x`` with every "seconds" key dropped, recursively: what two runs of the same session must agree on."""
    if isinstance(x, dict):
        return {k: without_seconds(v) for k, v in x.items() if k != "seconds"}
    if isinstance(x, list):
        return [without_seconds(v) for v in x]
    return x
