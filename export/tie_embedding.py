"""Graph transformation: let an int8 model's embedding lookup read the LM head's int8 matrix.

onnxruntime-genai's builder quantizes the LM head to 8 bits but keeps the (tied) embedding table
as a separate fp32 copy, because it only emits GatherBlockQuantized for 4 bits. onnxruntime's
GatherBlockQuantized does accept uint8 data with bits=8 (default zero point 128, the same
encoding as MatMulNBits, bit-identical to dequantizing it in numpy), so for a model with
tied embeddings we replace

    Gather(model.embed_tokens.weight [V, H] fp32, input_ids)
by  GatherBlockQuantized(Reshape(lm_head Q8 [V, H/B, B] -> [V, H]), input_ids, lm_head scales [V, H/B])

and drop the fp32 table: V*H*4 bytes become 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgestill.export.onnx_build import save_with_data

EMBED_GATHER = "/model/embed_tokens/Gather"
LM_HEAD_PREFIX = "/lm_head/"


def _attrs(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def tie_int8_embedding(model: onnx.ModelProto) -> bool:
    """Rewrite `model` in place as described above; return False (unchanged) if not applicable.

    Only call it for a checkpoint with tied embeddings: the graph alone cannot tell.
    """
    nodes = {n.name: n for n in model.graph.node}
    gather = nodes.get(EMBED_GATHER)
    head = next((n for n in model.graph.node if n.name.startswith(LM_HEAD_PREFIX)
                 and n.op_type == "MatMulNBits"), None)
    if gather is None or gather.op_type != "Gather" or head is None or len(head.input) != 3:
        return False
    a = _attrs(head)
    if a["bits"] != 8 or a["K"] % a["block_size"]:
        return False  # a padded last block (K not a multiple of the block) cannot be gathered
    inits = {t.name: t for t in model.graph.initializer}
    table = inits.get(gather.input[0])
    if table is None or list(table.dims) != [a["N"], a["K"]]:
        return False
    shape = numpy_helper.from_array(np.array([a["N"], a["K"]], dtype=np.int64), "/model/embed_tokens/q8_shape")
    model.graph.initializer.append(shape)
    flat = "/model/embed_tokens/q8_weight"
    reshape = helper.make_node("Reshape", [head.input[1], shape.name], [flat], name="/model/embed_tokens/Reshape")
    quant = helper.make_node("GatherBlockQuantized", [flat, gather.input[1], head.input[2]], list(gather.output),
                             name="/model/embed_tokens/GatherBlockQuantized", domain="com.microsoft",
                             gather_axis=0, quantize_axis=1, block_size=a["block_size"], bits=8)
    index = list(model.graph.node).index(gather)
    model.graph.node.remove(gather)
    model.graph.node.insert(index, quant)
    model.graph.node.insert(index, reshape)
    model.graph.initializer.remove(table)
    return True


def tie_int8_embedding_file(bundle_dir: Path, onnx_name: str = "model.onnx") -> bool:
    """Apply `tie_int8_embedding` to a bundle's model.onnx(+.data), rewriting both files."""
    path = bundle_dir / onnx_name
    model = onnx.load(str(path))  # with its external data
    if not tie_int8_embedding(model):
        return False
    save_with_data(model, path)
    return True
