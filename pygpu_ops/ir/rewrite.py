"""What the graph passes share to rewrite the operator IR: the domain of the nodes they create, new
graphs built from old ones (`rebuilt`, `replace`), fresh tensor names, the sole-reader test every
fusion relies on, and each tensor's rank from the op handlers (`ranks`). Used by `passes`,
`passes_quant` and `layout`; a graph is never edited in place.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from .graph import Graph, Node, Tensor

#: The domain of the nodes the passes create (never met in a model file).
DOMAIN = "pygpu_ops"


def rebuilt(graph: Graph, nodes: Sequence[Node], initializers: Dict[str, np.ndarray]) -> Graph:
    """A new graph with these nodes and initializers; tensors nobody references any more are dropped,
    and each new initializer gets its Tensor."""
    used = set(graph.inputs) | set(graph.outputs) | set(initializers)
    for n in nodes:
        used.update(x for x in n.inputs + n.outputs if x)
    tensors = {k: t for k, t in graph.tensors.items() if k in used}
    for k, v in initializers.items():
        if k not in graph.initializers or graph.initializers[k] is not v:
            tensors[k] = Tensor(k, v.dtype, v.shape)
    return Graph(nodes, tensors, initializers, graph.inputs, graph.outputs, graph.opset, graph.name)


def replace(graph: Graph, old: Sequence[Node], new: Node, new_inits: Dict[str, np.ndarray]) -> Graph:
    """``old`` nodes replaced by ``new`` (placed where the first of them was), plus initializers."""
    gone = {id(n) for n in old}
    nodes: List[Node] = []
    for n in graph.nodes:
        if id(n) == id(old[0]):
            nodes.append(new)
        elif id(n) not in gone:
            nodes.append(n)
    return rebuilt(graph, nodes, {**graph.initializers, **new_inits})


def fresh(graph: Graph, base: str, taken: set) -> str:
    """A tensor name not yet used in the graph (nor in ``taken``), derived from ``base``."""
    names = set(graph.tensors) | set(graph.initializers) | taken
    names.update(o for n in graph.nodes for o in n.outputs)
    name, k = base, 1
    while name in names:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


def sole_reader(graph: Graph, tensor: str, node: Node) -> bool:
    """``node`` is the only reader of ``tensor`` and the tensor is not a graph output: then folding
    or fusing ``tensor``'s producer into ``node`` loses nothing anyone sees."""
    readers = graph.consumers(tensor)
    return tensor not in graph.outputs and len(readers) == 1 and readers[0] is node


def ranks(graph: Graph) -> Dict[str, Optional[int]]:
    """Every tensor's rank, from the op handlers run on the declared input shapes (a
    ``NotImplementedError`` / ``ValueError`` where the session would refuse the graph)."""
    from .session import declared_feeds, walk   # the session imports the passes

    _, env = walk(graph, declared_feeds(graph), "numpy")
    return {name: info.rank for name, info in env.items()}
