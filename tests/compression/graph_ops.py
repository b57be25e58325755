"""What the in-encoder compression tests look for in exported graphs."""


def forbidden_nodes(model):
    """Nodes TensorRT cannot take natively: data-dependent shapes, scatter reductions, ScatterND."""
    bad = []
    for n in model.graph.node:
        reduction = next((a.s.decode() for a in n.attribute if a.name == "reduction"), "none")
        if n.op_type in ("NonZero", "Compress", "ScatterND", "Unique") or (
                n.op_type in ("ScatterElements", "Scatter") and reduction != "none"):
            bad.append(f"{n.op_type}:{n.name}")
    return bad
