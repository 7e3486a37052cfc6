//! The Gen-T model of a window (the Gen-T paper, with calibrated timing). `topology` holds
//! the topology histogram H, exact counts of every topology with its nodes in
//! canonical order, and the chain decomposition; `attributes` the span
//! attributes modelled beside timing, status and kind; `tables` one tabular
//! generator (a CTGAN plus the columns that are constant); `starts` exact
//! trace start counts, `status` exact counts of failed spans per label and
//! minute, and `timing` the calibrated timing (quantile sketches
//! per label composed along the tree); `digest` a window folded trace by
//! trace into what its model is trained on; `model` training on a window and
//! regenerating its traces. Packing a model with its header lives in
//! `codec`, which alone knows what else a packet carries.

mod attributes;
mod cells;
mod composed;
mod cores;
mod digest;
mod latency;
mod model;
mod shares;
mod starts;
mod status;
mod tables;
mod times;
mod timing;
mod topology;

pub use attributes::{AttributeConfig, AttributeSchema, KeyModel, Kind as AttributeKind};
pub use cells::{Bin, Quantity, TimeCells};
pub use digest::{Digest, DigestConfig, TIMING_SPANS, WindowDigest};
pub use model::{Budget, GenTConfig, Generators, ModelError, Repairs, StoredWindowModel, WindowModel, head_gzip_bytes};
pub use starts::{StartBuckets, StartError, StartModel};
pub use status::{ErrorCounts, StatusError, StatusModel};
pub use tables::{Fixed, StoredTableModel, TableModel};
pub use times::NodeTimes;
pub use timing::{CalibrationConfig, NodeLocations, TimingError, TimingModel};
pub use topology::{HistogramBuilder, Label, Placement, Topology, TopologyHistogram};
