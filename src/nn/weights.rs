//! Network weights to and from bytes, in burn 0.22's module record format
//! (burnpack). The network to load into is built first with the same shape
//! (the record holds values, not structure); a record that does not fit it is
//! an error, never a partial load.
//!
//! Weights can be stored as f16, which halves what a packet carries; loading
//! casts them back to the network's own precision, so the f16 rounding is the
//! only difference (relative error below 2⁻¹¹ per weight).

use burn::module::{Module, ModuleMapper, Param};
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, DType, Tensor};

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
    };
    let bytes = module.into_record().into_bytes().map_err(|e| WeightsError::Encode(format!("{e:?}")))?;
    Ok(bytes.to_vec())
}

/// `template` (a network of the same shape) with the weights in `bytes`, cast
/// to the template's precision whatever precision they were stored at.
pub fn from_bytes<M: Module>(template: M, bytes: &[u8]) -> Result<M, WeightsError> {
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes.to_vec()))
        .map_err(|e| WeightsError::Decode(format!("{e:?}")))?
        .cast_to_module_dtype();
    template.try_load_record(record).map_err(|e| WeightsError::Decode(format!("{e:?}")))
}
