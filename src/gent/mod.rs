//! The Gen-T model of a window (DESIGN.md, "Gen-T model"). `topology` holds
//! the topology histogram H, exact counts of every topology with its nodes in
//! canonical order, and the chain decomposition C_G is trained on.

mod topology;

pub use topology::{Label, Placement, Topology, TopologyHistogram};
