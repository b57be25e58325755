"""What TensorRT's ONNX parser accepts: the operator table the lint checks against.

Source: onnx/onnx-tensorrt `docs/operators.md`, the support matrix published with TensorRT 10.15
("supports operators in the inclusive range of opset 9 to opset 24"), cross-checked against the 10.0/10.1
table ("opset 9 to opset 20") and the parser's changelog for the ops added since JetPack 6's TensorRT 10.3.
Restrictions that the lint checks node by node (TopK, Resize, Scatter*, pooling, …) live in `lint.py`;
this module only holds the tables, so updating it for a new TensorRT release is a data change.
"""

from __future__ import annotations

# Inclusive opset range of the default ONNX domain that the newest table seen documents (TensorRT 10.15).
# No TensorRT 11 table was available to check; re-check this range (and the op sets) against it.
PARSER_OPSET_RANGE = (9, 24)

# The TensorRT 10.0–10.2 tables document opsets 9–20; JetPack 6 ships TensorRT 10.3. A higher opset is
# a warning: it parses on current TensorRT but is outside what the Jetson parser was written against.
JETPACK6_TRT = "10.3"
JETPACK6_MAX_OPSET = 20

# Operators marked "Y" in the table.
SUPPORTED_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool BatchNormalization
BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh
CumSum DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf
Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool
GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization GRU HammingWindow HannWindow
HardSigmoid HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN
LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool
MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not
OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean
ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RMSNormalization RNN
RoiAlign RotaryEmbedding Round STFT ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink
Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan
Tanh TensorScatter ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

# Operators marked "N": the parser rejects them (unless a plugin of the same name is registered).
UNSUPPORTED_OPS = frozenset("""
AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor Col2Im CenterCropPad Compress
ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear ImageDecoder MatMulInteger MaxRoiPool
MaxUnpool MelWeightMatrix Multinomial NegativeLogLikelihoodLoss Optional OptionalGetElement
OptionalHasElement QLinearConv QLinearMatMul RegexFullMatch SequenceAt SequenceConstruct SequenceEmpty
SequenceErase SequenceInsert SequenceLength SequenceMap SoftmaxCrossEntropyLoss SplitToSequence
StringConcat StringNormalizer StringSplit TfIdfVectorizer Unique
""".split())

# Supported only from this TensorRT release on (onnx-tensorrt changelog): older parsers, JetPack 6's
# TensorRT 10.3 among them, reject them.
SUPPORTED_SINCE = {
    "BlackmanWindow": "10.4",
    "HammingWindow": "10.4",
    "HannWindow": "10.4",
    "STFT": "10.5",
    "Attention": "10.14",
    "RMSNormalization": "10.15",
    "RotaryEmbedding": "10.15",
    "TensorScatter": "10.15",
}

# Ops whose output shape depends on the data. The parser takes NonZero and NonMaxSuppression, but the
# engine then has data-dependent shapes (no DLA, no static token count); Unique/Compress are rejected.
DATA_DEPENDENT_OPS = frozenset({"NonZero", "NonMaxSuppression", "Unique", "Compress"})

# Control flow: parsed into TensorRT loop/conditional constructs, which build but run slower than
# straight-line layers and are a common source of shape problems.
CONTROL_FLOW_OPS = frozenset({"If", "Loop", "Scan"})

# TensorRT's TopK: `K` must be less than 3840 (table, TopK row).
TOPK_MAX_K = 3840

# Resize: the coordinate transformation modes the table lists as supported.
RESIZE_COORD_MODES = frozenset({"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric",
                                "align_corners"})
RESIZE_MODES = frozenset({"nearest", "linear", "cubic"})

# ONNX element types (onnx.TensorProto enum values, spelled out so this module needs no onnx import).
# The table: "DOUBLE, FLOAT32, FLOAT16, BFLOAT16, FP8, FP4, INT32, INT64, INT8, INT4, UINT8, and BOOL",
# DOUBLE only by casting down to float, UINT8 only as a network input or output.
ONNX_DTYPES = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 8: "string",
    9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 14: "complex64",
    15: "complex128", 16: "bfloat16", 17: "float8e4m3fn", 18: "float8e4m3fnuz", 19: "float8e5m2",
    20: "float8e5m2fnuz", 21: "uint4", 22: "int4", 23: "float4e2m1",
}
TRT_DTYPES = frozenset({1, 2, 3, 6, 7, 9, 10, 16, 17, 22, 23})
DOUBLE = 11
UINT8 = 2


def dtype_name(elem_type: int) -> str:
    """Readable name of an ONNX element type (`float64`, …); `type<N>` for unknown codes."""
    return ONNX_DTYPES.get(int(elem_type), f"type{int(elem_type)}")
