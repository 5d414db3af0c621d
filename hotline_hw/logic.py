"""Small combinational building blocks shared by the RTL blocks."""

__all__ = ["or_tree"]


def or_tree(values):
    """OR of many values as a balanced tree: a linear chain makes elaboration quadratic."""
    values = list(values)
    while len(values) > 1:
        values = [values[i] | values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]
