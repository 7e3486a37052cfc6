//! Packets and the link they travel over.
//!
//! `format` turns a window's model into self-checking bytes; `link` is the gRPC
//! `PacketService` (proto/gent.proto) both ends speak; `spool` keeps packets on
//! disk until the decompressor acknowledges them; `sender` drains the spool over
//! the link with retries.

mod format;
pub mod link;
pub mod sender;
pub mod spool;

pub use format::{
    FORMAT_VERSION, MAGIC, MAX_BODY_BYTES, MAX_WINDOW_BODY_BYTES, PacketError, compressed_len, open, open_as, open_body_as,
    open_checked, seal, seal_as, seal_body_as,
};
