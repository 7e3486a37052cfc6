//! The Gen-T model of a window (DESIGN.md, "Gen-T model"). `topology` holds
//! the topology histogram H, exact counts of every topology with its nodes in
//! canonical order, and the chain decomposition; `attributes` the span
//! attributes modelled beside timing, status and kind; `tables` one tabular
//! generator (a CTGAN plus the columns that are constant); `model` training
//! T_G, R_G and C_G on a window and regenerating its traces; `pack` a
//! model with its header in and out of a packet.

mod attributes;
mod model;
mod pack;
mod tables;
mod topology;

pub use attributes::{AttributeConfig, AttributeSchema, KeyModel, Kind as AttributeKind};
pub use model::{GenTConfig, ModelError, Repairs, StoredWindowModel, WindowModel};
pub use pack::{Header, PackError, Unpacked, pack, unpack};
pub use tables::{Fixed, StoredTableModel, TableModel};
pub use topology::{Label, Placement, Topology, TopologyHistogram};
