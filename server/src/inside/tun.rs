//! The server's TUN device: the shared `ringway-tun` crate, opened with what the data path
//! can handle.
//!
//! The io_uring loop reads and writes the raw descriptor ([`AsRawFd`](std::os::fd::AsRawFd)
//! on [`Tun`]); [`open`] creates and configures it once at start.

use ringway_tun::{LinkConfig, TunOptions};
pub use ringway_tun::{Offload, Offloads, Tun, TunError};

use crate::config::Settings;

/// Whether the data path (`uring/paths/tun.rs` and the paths it hands packets to) reads and
/// writes TUN packets with the 10-byte `virtio_net_hdr` in front, splits the superpackets a
/// read may return, and completes the checksums the kernel leaves partial. It does, so
/// `server.offload = auto` opens the TUN with offload.
pub const DATA_PATH_HANDLES_VNET_HDR: bool = true;

/// Creates the TUN `server.tun_name`, gives it the pool's first host, the prefix and MTU,
/// and brings it up; `blocking` as the backend needs (`uring.tun_blocking` for io_uring, never
/// for tokio's readiness loop). What offloads it got is in [`Tun::offloads`]; the caller logs
/// them with the rest of the data path's settings ([`describe`]).
pub fn open(settings: &Settings, blocking: bool) -> Result<Tun, TunError> {
    let tun = Tun::create(
        &settings.tun_name,
        &TunOptions {
            offload: settings.offload.for_data_path(DATA_PATH_HANDLES_VNET_HDR),
            blocking,
        },
    )?;
    tun.configure(&LinkConfig {
        addr: settings.pool.first_host(),
        prefix_len: settings.pool.prefix_len(),
        mtu: settings.mtu,
        txqueuelen: None,
    })?;
    Ok(tun)
}

/// Caps the superpackets the kernel hands this TUN at `segments` segments (its
/// `gso_max_segs`), so that each is sent with one `UDP_SEGMENT` `sendmsg`: one send
/// carries at most 64 datagrams and 64 KiB, fewer than a 64 KiB TSO superpacket's
/// segments once each has its 32 bytes of frame overhead. Best effort: where `ip`
/// cannot set it (an old kernel), a superpacket just takes two sends.
pub fn limit_superpackets(tun: &Tun, segments: usize) {
    let n = segments.to_string();
    if let Err(e) = ringway_tun::ip::run(&["link", "set", "dev", tun.name(), "gso_max_segs", &n]) {
        tracing::debug!(tun = tun.name(), error = %e, "could not set gso_max_segs");
    }
}

/// The start-up line's TUN part: what the device got and, when that is less than asked,
/// why.
pub fn describe(settings: &Settings, tun: &Tun) -> String {
    settings
        .offload
        .describe("server.offload", DATA_PATH_HANDLES_VNET_HDR, tun.offloads())
}
