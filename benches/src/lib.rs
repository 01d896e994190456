//! Ringway benchmarks.
//!
//! - `benches/seal_open.rs` (criterion): per-packet cost of sealing and opening
//!   a transport frame in place, for both ciphers and typical packet sizes.
//! - The end-to-end throughput comparison lives in the `ringway-e2e` crate
//!   (network namespaces + iperf3), because it needs root and real devices.
