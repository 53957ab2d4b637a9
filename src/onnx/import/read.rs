//! Reading an ONNX model's pieces with every size checked: constant
//! tensors (initializers and `Constant` nodes) as f32 or i64 arrays, and
//! node attributes by name.

use std::collections::HashMap;

use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::{AttributeProto, GraphProto, NodeProto, TensorProto};
use protobuf::Enum;

/// The most elements one constant may hold (a billion f32: 4 GB).
const MAX_ELEMENTS: u64 = 1 << 30;

/// A constant tensor's values, as f32 (weights) or i64 (shapes, axes, pads).
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// Floating-point values (f32, or f64 narrowed).
    Float(Vec<f32>),
    /// Integer values.
    Int(Vec<i64>),
}

/// A constant tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Constant {
    /// Its dimensions.
    pub dims: Vec<u64>,
    /// Its values, row-major.
    pub values: Values,
}

impl Constant {
    /// The values as f32, if they are floats.
    pub fn floats(&self) -> Option<&[f32]> {
        match &self.values {
            Values::Float(v) => Some(v),
            Values::Int(_) => None,
        }
    }

    /// The values as i64, if they are integers.
    pub fn ints(&self) -> Option<&[i64]> {
        match &self.values {
            Values::Int(v) => Some(v),
            Values::Float(_) => None,
        }
    }
}

/// Every constant of `graph` by name: its initializers and the outputs of
/// its `Constant` nodes. A tensor that cannot be read is left out, with
/// the reason, in the second map.
pub fn constants(graph: &GraphProto) -> (HashMap<String, Constant>, HashMap<String, String>) {
    let mut found = HashMap::new();
    let mut unreadable = HashMap::new();
    let tensors = graph.initializer.iter().map(|t| (t.name.clone(), t));
    let from_nodes = graph
        .node
        .iter()
        .filter(|n| n.op_type == "Constant")
        .filter_map(|n| {
            let value = attribute(n, "value")?;
            let tensor = value.t.as_ref()?;
            Some((n.output.first()?.clone(), tensor))
        });
    for (name, tensor) in tensors.chain(from_nodes) {
        match constant(tensor) {
            Ok(c) => {
                found.insert(name, c);
            }
            Err(reason) => {
                unreadable.insert(name, reason);
            }
        }
    }
    (found, unreadable)
}

/// One tensor's dimensions and values, checked: its element count within
/// [`MAX_ELEMENTS`] and its data exactly that long.
pub fn constant(tensor: &TensorProto) -> Result<Constant, String> {
    let mut count: u64 = 1;
    let mut dims = Vec::with_capacity(tensor.dims.len());
    for &d in &tensor.dims {
        let d = u64::try_from(d).map_err(|_| format!("a negative dimension {d}"))?;
        count = count
            .checked_mul(d)
            .filter(|&c| c <= MAX_ELEMENTS)
            .ok_or("more than 2^30 elements")?;
        dims.push(d);
    }
    if !tensor.external_data.is_empty() {
        return Err("its data is in an external file, which cnnc does not read".into());
    }
    let values = match DataType::from_i32(tensor.data_type) {
        Some(DataType::FLOAT) if !tensor.raw_data.is_empty() => {
            Values::Float(chunks(&tensor.raw_data, count, f32::from_le_bytes)?)
        }
        Some(DataType::FLOAT) => Values::Float(exact(tensor.float_data.clone(), count)?),
        Some(DataType::DOUBLE) if !tensor.raw_data.is_empty() => Values::Float(
            chunks(&tensor.raw_data, count, f64::from_le_bytes)?
                .into_iter()
                .map(|v| v as f32)
                .collect(),
        ),
        Some(DataType::DOUBLE) => Values::Float(
            exact(tensor.double_data.clone(), count)?
                .into_iter()
                .map(|v| v as f32)
                .collect(),
        ),
        Some(DataType::INT64) if !tensor.raw_data.is_empty() => {
            Values::Int(chunks(&tensor.raw_data, count, i64::from_le_bytes)?)
        }
        Some(DataType::INT64) => Values::Int(exact(tensor.int64_data.clone(), count)?),
        Some(DataType::INT32) if !tensor.raw_data.is_empty() => Values::Int(
            chunks(&tensor.raw_data, count, i32::from_le_bytes)?
                .into_iter()
                .map(i64::from)
                .collect(),
        ),
        Some(DataType::INT32) => Values::Int(
            exact(tensor.int32_data.clone(), count)?
                .into_iter()
                .map(i64::from)
                .collect(),
        ),
        _ => {
            return Err(format!(
                "its element type ({}) is not a float or an integer",
                tensor.data_type
            ))
        }
    };
    Ok(Constant { dims, values })
}

/// `count` values of `N` bytes each, little-endian, from `bytes`, which must
/// hold exactly that many.
fn chunks<T, const N: usize>(
    bytes: &[u8],
    count: u64,
    read: fn([u8; N]) -> T,
) -> Result<Vec<T>, String> {
    if bytes.len() as u64 != count * N as u64 {
        return Err(format!(
            "{} bytes of data for {count} elements of {N} bytes",
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(N)
        .map(|c| read(c.try_into().expect("chunks of N bytes")))
        .collect())
}

fn exact<T>(values: Vec<T>, count: u64) -> Result<Vec<T>, String> {
    if values.len() as u64 == count {
        Ok(values)
    } else {
        Err(format!("{} values for {count} elements", values.len()))
    }
}

/// The attribute `name` of `node`.
pub fn attribute<'n>(node: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

/// An integer attribute, or `default`.
pub fn int(node: &NodeProto, name: &str, default: i64) -> i64 {
    match attribute(node, name) {
        Some(a) if a.type_.enum_value() == Ok(AttributeType::INT) => a.i,
        _ => default,
    }
}

/// A float attribute, or `default`.
pub fn float(node: &NodeProto, name: &str, default: f32) -> f32 {
    match attribute(node, name) {
        Some(a) if a.type_.enum_value() == Ok(AttributeType::FLOAT) => a.f,
        _ => default,
    }
}

/// A float attribute (or `default`) as the f64 it was written from: the
/// shortest decimal that gives the f32 (`0.001`, not `0.0010000000474974513`).
pub fn number(node: &NodeProto, name: &str, default: f32) -> f64 {
    let f = float(node, name, default);
    f.to_string().parse().unwrap_or(f64::from(f))
}

/// An integer-list attribute, if present.
pub fn ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    match attribute(node, name) {
        Some(a) if a.type_.enum_value() == Ok(AttributeType::INTS) => Some(a.ints.clone()),
        _ => None,
    }
}

/// A string attribute, or `default`.
pub fn string(node: &NodeProto, name: &str, default: &str) -> String {
    match attribute(node, name) {
        Some(a) if a.type_.enum_value() == Ok(AttributeType::STRING) => {
            String::from_utf8_lossy(&a.s).into_owned()
        }
        _ => default.to_string(),
    }
}
