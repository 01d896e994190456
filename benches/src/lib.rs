//! Ringway benchmarks.
//!
//! - `benches/seal_open.rs` (criterion): per-packet cost of sealing and opening
//!   a transport frame in place, for both ciphers and typical packet sizes.
//! - `benches/offload.rs` (criterion): splitting a 64 KiB TCP superpacket into
//!   MTU-sized packets and coalescing them back, against a memcpy baseline.
//! - The end-to-end throughput comparison lives in the `ringway-e2e` crate
//!   (network namespaces + iperf3), because it needs root and real devices.
