//! Ringway benchmarks.
//!
//! - `benches/seal_open.rs` (criterion): per-packet cost of sealing and opening a transport
//!   frame in place, for both ciphers and typical packet sizes.
//! - `benches/offload.rs` (criterion): splitting a 64 KiB TCP superpacket into MTU-sized
//!   packets and coalescing them back, against a memcpy baseline.
//! - [`tunnel`] and the `ringway-tunnel-bench` binary (`scripts/bench`): the whole system in
//!   network namespaces, raw veth against Ringway over UDP and TCP, and build against build,
//!   with iperf3, ping, CPU per GB and the server's packets per system call. It needs root and
//!   real devices, so it builds on the e2e testbed (`ringway-e2e`).

pub mod tunnel;
