//! Network weights to and from bytes, in burn 0.22's module record format
//! (burnpack). The network to load into is built first with the same shape
//! (the record holds values, not structure); a record that does not fit it is
//! an error, never a partial load.

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("cannot encode network weights: {0}")]
    Encode(String),
    #[error("network weights do not decode or do not fit this network: {0}")]
    Decode(String),
}

/// The weights of `module` as bytes.
pub fn to_bytes<M: Module>(module: M) -> Result<Vec<u8>, WeightsError> {
    let bytes = module.into_record().into_bytes().map_err(|e| WeightsError::Encode(format!("{e:?}")))?;
    Ok(bytes.to_vec())
}

/// `template` (a network of the same shape) with the weights in `bytes`.
pub fn from_bytes<M: Module>(template: M, bytes: &[u8]) -> Result<M, WeightsError> {
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes.to_vec()))
        .map_err(|e| WeightsError::Decode(format!("{e:?}")))?;
    template.try_load_record(record).map_err(|e| WeightsError::Decode(format!("{e:?}")))
}
