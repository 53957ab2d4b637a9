//! Small constructors over the ONNX protobuf messages (the `onnx-protobuf`
//! crate's generated types), so that the exporter reads as a list of
//! operators rather than of message fields.

use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::tensor_shape_proto::{dimension, Dimension};
use onnx_protobuf::type_proto::{self, Tensor as TensorType};
use onnx_protobuf::{
    AttributeProto, NodeProto, StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};

/// One attribute value of a node.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    /// An integer.
    Int(i64),
    /// A list of integers.
    Ints(Vec<i64>),
    /// A float.
    Float(f32),
    /// A string.
    Str(&'static str),
}

/// A node: `op_type` from inputs to outputs, named `name`, with `attributes`.
pub fn node(
    op_type: &str,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attributes: &[(&str, Attr)],
) -> NodeProto {
    let mut node = NodeProto::new();
    node.op_type = op_type.to_string();
    node.name = name.to_string();
    node.input = inputs.iter().map(|s| s.to_string()).collect();
    node.output = outputs.iter().map(|s| s.to_string()).collect();
    node.attribute = attributes
        .iter()
        .map(|(name, value)| attribute(name, value))
        .collect();
    node
}

fn attribute(name: &str, value: &Attr) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.to_string();
    let kind = match value {
        Attr::Int(i) => {
            a.i = *i;
            AttributeType::INT
        }
        Attr::Ints(ints) => {
            a.ints = ints.clone();
            AttributeType::INTS
        }
        Attr::Float(f) => {
            a.f = *f;
            AttributeType::FLOAT
        }
        Attr::Str(s) => {
            a.s = s.as_bytes().to_vec();
            AttributeType::STRING
        }
    };
    a.type_ = kind.into();
    a
}

/// A float32 tensor `name` of `dims` holding `data` (row-major), stored as
/// little-endian raw data.
pub fn float_tensor(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.to_string();
    t.dims = dims.to_vec();
    t.data_type = DataType::FLOAT as i32;
    t.raw_data = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    t
}

/// An int64 tensor `name` of one axis holding `data` (shapes, axes, pads).
pub fn int_tensor(name: &str, data: &[i64]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.to_string();
    t.dims = vec![data.len() as i64];
    t.data_type = DataType::INT64 as i32;
    t.raw_data = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    t
}

/// The float32 tensor type of a graph input or output named `name`: a
/// symbolic batch `batch` (the dimension parameter's name) before `dims`.
pub fn batched_value(name: &str, batch: &str, dims: &[u64]) -> ValueInfoProto {
    let mut shape = TensorShapeProto::new();
    let mut first = Dimension::new();
    first.value = Some(dimension::Value::DimParam(batch.to_string()));
    shape.dim.push(first);
    for &d in dims {
        let mut dim = Dimension::new();
        dim.value = Some(dimension::Value::DimValue(d as i64));
        shape.dim.push(dim);
    }
    let mut tensor = TensorType::new();
    tensor.elem_type = DataType::FLOAT as i32;
    tensor.shape = Some(shape).into();
    let mut ty = TypeProto::new();
    ty.value = Some(type_proto::Value::TensorType(tensor));
    let mut value = ValueInfoProto::new();
    value.name = name.to_string();
    value.type_ = Some(ty).into();
    value
}

/// A metadata entry.
pub fn entry(key: &str, value: &str) -> StringStringEntryProto {
    let mut e = StringStringEntryProto::new();
    e.key = key.to_string();
    e.value = value.to_string();
    e
}
