//! Packets and the link they travel over.
//!
//! `link` is the gRPC `PacketService` (proto/gent.proto) both ends speak; `spool` keeps packets on
//! disk until the decompressor acknowledges them; `sender` drains the spool over
//! the link with retries; `config` holds the link's configuration sections.

mod config;
pub mod link;
pub mod sender;
pub mod spool;

pub use config::{LinkClientConfig, LinkServerConfig, TokenError};
