//! Network weights to and from bytes, in burn 0.22's module record format
//! (burnpack). The network to load into is built first with the same shape
//! (the record holds values, not structure); a record that does not fit it is
//! an error, never a partial load.
//!
//! Weights can be stored as f16, which halves what a packet carries; loading
//! casts them back to the network's own precision, so the f16 rounding is the
//! only difference (relative error below 2⁻¹¹ per weight). Or as int8 with a
//! scale per row (a quarter of f32's bytes), in a format of gent's own: burn's
//! record holds a dtype per tensor, not a scale per row.

use burn::module::{Module, ModuleMapper, Param};
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, DType, Tensor, TensorData};
use half::f16;

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("cannot encode network weights: {0}")]
    Encode(String),
    #[error("network weights do not decode or do not fit this network: {0}")]
    Decode(String),
}

/// How floating-point weights are stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Precision {
    /// As trained (f32): exact.
    #[default]
    F32,
    /// Half precision: half the bytes, about three significant digits.
    F16,
    /// Matrices as int8, each row scaled by its largest magnitude (an f16
    /// scale per row, error at most half a step of 1/127 of it per weight);
    /// vectors (biases, norms) as f16.
    Int8,
}

/// Casts every float parameter (running statistics included) to one dtype.
struct CastFloats(DType);

impl ModuleMapper for CastFloats {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let dtype = self.0;
        param.map(|t| t.cast(dtype))
    }
}

/// The weights of `module` as bytes, at `precision`.
pub fn to_bytes<M: Module>(module: M, precision: Precision) -> Result<Vec<u8>, WeightsError> {
    let module = match precision {
        Precision::F32 => module,
        Precision::F16 => module.map(&mut CastFloats(DType::F16)),
        Precision::Int8 => return int8_bytes(module),
    };
    let bytes = module.into_record().into_bytes().map_err(|e| WeightsError::Encode(format!("{e:?}")))?;
    Ok(bytes.to_vec())
}

/// `template` (a network of the same shape) with the weights in `bytes`, cast
/// to the template's precision whatever precision they were stored at.
pub fn from_bytes<M: Module>(template: M, bytes: &[u8]) -> Result<M, WeightsError> {
    if let Some(body) = bytes.strip_prefix(INT8_MAGIC) {
        return from_int8(template, body);
    }
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes.to_vec()))
        .map_err(|e| WeightsError::Decode(format!("{e:?}")))?
        .cast_to_module_dtype();
    template.try_load_record(record).map_err(|e| WeightsError::Decode(format!("{e:?}")))
}

/// What int8 weights begin with (a burnpack record never does).
const INT8_MAGIC: &[u8] = b"gent-int8/1\n";

/// Every float parameter of `module`, in the order burn visits them: its
/// rank and dimensions (u32), then its values, matrices int8 row by row
/// after the row's f16 scale, vectors f16.
fn int8_bytes<M: Module>(module: M) -> Result<Vec<u8>, WeightsError> {
    let mut q = Quantize { out: INT8_MAGIC.to_vec(), error: None };
    let _ = module.map(&mut q);
    q.error.map_or(Ok(q.out), |e| Err(WeightsError::Encode(e)))
}

struct Quantize {
    out: Vec<u8>,
    error: Option<String>,
}

impl ModuleMapper for Quantize {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let tensor = param.val();
        let dims = tensor.dims();
        match tensor.try_to_vec_as::<f32>() {
            Ok(values) => quantize(&dims, &values, &mut self.out),
            Err(e) => self.error = Some(format!("{e:?}")),
        }
        param
    }
}

/// One tensor of `dims` holding `values` (row-major) to `out`.
fn quantize(dims: &[usize], values: &[f32], out: &mut Vec<u8>) {
    out.push(dims.len() as u8);
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_le_bytes());
    }
    let cols = dims.last().copied().unwrap_or(1).max(1);
    if dims.len() < 2 {
        out.extend(values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()));
        return;
    }
    for row in values.chunks(cols) {
        let largest = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        // The scale as stored, so that rounding it moves no weight past ±127.
        let scale = f16::from_f32(largest / 127.0);
        out.extend_from_slice(&scale.to_le_bytes());
        let step = scale.to_f32();
        out.extend(row.iter().map(|&v| if step > 0.0 { (v / step).round().clamp(-127.0, 127.0) as i8 as u8 } else { 0 }));
    }
}

/// `template` with the int8 weights of `body` (after the magic).
fn from_int8<M: Module>(template: M, body: &[u8]) -> Result<M, WeightsError> {
    let mut d = Dequantize { body, at: 0, index: 0, error: None };
    let module = template.map(&mut d);
    if let Some(e) = d.error {
        return Err(WeightsError::Decode(e));
    }
    if d.at != body.len() {
        return Err(WeightsError::Decode(format!("int8 weights: {} bytes left after {} tensors", body.len() - d.at, d.index)));
    }
    Ok(module)
}

struct Dequantize<'a> {
    body: &'a [u8],
    at: usize,
    /// Tensors read so far.
    index: usize,
    error: Option<String>,
}

impl Dequantize<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.body.len());
        let end = end.ok_or_else(|| format!("int8 weights: tensor {} ends past the {} bytes", self.index, self.body.len()))?;
        let bytes = &self.body[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    /// The next tensor's values, which must have the template's `dims`: the
    /// template's shape bounds what is allocated, never the input.
    fn next(&mut self, dims: &[usize]) -> Result<Vec<f32>, String> {
        let rank = self.take(1)?[0] as usize;
        let mut stored = Vec::with_capacity(rank.min(8));
        for _ in 0..rank {
            let b = self.take(4)?;
            stored.push(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
        }
        if stored != dims {
            return Err(format!("int8 weights: tensor {} is {stored:?}, the network's is {dims:?}", self.index));
        }
        let n: usize = dims.iter().product();
        let cols = dims.last().copied().unwrap_or(1).max(1);
        if dims.len() < 2 {
            return Ok(self.take(2 * n)?.chunks(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect());
        }
        let mut values = Vec::with_capacity(n);
        for _ in 0..n / cols {
            let b = self.take(2)?;
            let step = f16::from_le_bytes([b[0], b[1]]).to_f32();
            values.extend(self.take(cols)?.iter().map(|&q| f32::from(q as i8) * step));
        }
        Ok(values)
    }
}

impl ModuleMapper for Dequantize<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if self.error.is_some() {
            return param;
        }
        let dims = param.val().dims();
        let read = self.next(&dims);
        self.index += 1;
        match read {
            Ok(values) => param.map(|t| {
                let dtype = t.dtype();
                Tensor::<D>::from_data(TensorData::new(values, dims), &t.device()).cast(dtype)
            }),
            Err(e) => {
                self.error = Some(e);
                param
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::Device;

    fn weights(l: &Linear) -> Vec<f32> {
        let mut v = l.weight.val().try_to_vec_as::<f32>().unwrap();
        v.extend(l.bias.as_ref().unwrap().val().try_to_vec_as::<f32>().unwrap());
        v
    }

    #[test]
    fn int8_weights_come_back_within_half_a_step_of_their_row() {
        let device = Device::flex();
        let layer = LinearConfig::new(24, 10).init(&device);
        let exact = weights(&layer);
        let bytes = to_bytes(layer.clone(), Precision::Int8).unwrap();
        // A byte per weight, two per row's scale and per bias, and the shapes.
        assert!(bytes.len() < 24 * 10 + 2 * 24 + 2 * 10 + 64, "{} bytes", bytes.len());
        let loaded = from_bytes(LinearConfig::new(24, 10).init(&device), &bytes).unwrap();
        let got = weights(&loaded);
        let largest = exact[..240].iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (i, (a, b)) in exact.iter().zip(&got).enumerate() {
            // Weights within half a step (the largest row's), biases as f16.
            let bound = if i < 240 { largest / 127.0 * 0.51 } else { a.abs() / 1024.0 };
            assert!((a - b).abs() <= bound, "weight {i}: {a} came back {b}");
        }
    }

    #[test]
    fn int8_weights_of_another_shape_or_cut_short_are_errors() {
        let device = Device::flex();
        let bytes = to_bytes(LinearConfig::new(24, 10).init(&device), Precision::Int8).unwrap();
        let wrong = from_bytes(LinearConfig::new(24, 11).init(&device), &bytes).unwrap_err();
        assert!(wrong.to_string().contains("the network's is"), "{wrong}");
        let short = from_bytes(LinearConfig::new(24, 10).init(&device), &bytes[..bytes.len() - 3]).unwrap_err();
        assert!(short.to_string().contains("ends past"), "{short}");
        let mut long = bytes.clone();
        long.push(0);
        let long = from_bytes(LinearConfig::new(24, 10).init(&device), &long).unwrap_err();
        assert!(long.to_string().contains("left after"), "{long}");
    }
}
