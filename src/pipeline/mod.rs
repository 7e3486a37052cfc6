//! The daemons, wired from the layers below: the compressor (receivers,
//! windows, the ship stage that trains, checks and spools each window, the
//! link client), the decompressor (link server, regeneration, exporters),
//! and what both share to start and stop ([`lifecycle`]).

pub mod compressor;
pub mod decompressor;
pub mod demo;
pub mod lifecycle;
pub mod ship;
