//! The server's TUN device: the shared `ringway-tun` crate, opened with what the data path
//! can handle.
//!
//! The io_uring loop reads and writes the raw descriptor ([`AsRawFd`](std::os::fd::AsRawFd)
//! on [`Tun`]); [`open`] creates, configures and logs it once at start.

use ringway_tun::{LinkConfig, TunOptions};
pub use ringway_tun::{Offload, Offloads, Tun, TunError};

use crate::config::Settings;

/// Whether the data path (`uring/paths/tun.rs` and the paths it hands packets to) reads and
/// writes TUN packets with the 10-byte `virtio_net_hdr` in front, splits the superpackets a
/// read may return, and completes the checksums the kernel leaves partial.
///
/// It does not yet, so the TUN opens with offload off whatever `server.offload` says, and the
/// start-up line says so. The step of issue 8 that teaches the data path the header flips
/// this, and nothing else here needs to change.
pub const DATA_PATH_HANDLES_VNET_HDR: bool = false;

/// Creates the TUN `server.tun_name`, gives it the pool's first host, the prefix and MTU,
/// brings it up, and logs one line with the offloads it got.
pub fn open(settings: &Settings) -> Result<Tun, TunError> {
    let tun = Tun::create(
        &settings.tun_name,
        &TunOptions {
            offload: settings.offload.for_data_path(DATA_PATH_HANDLES_VNET_HDR),
            blocking: settings.uring.tun_blocking,
        },
    )?;
    tun.configure(&LinkConfig {
        addr: settings.pool.first_host(),
        prefix_len: settings.pool.prefix_len(),
        mtu: settings.mtu,
        txqueuelen: None,
    })?;
    tracing::info!(
        tun = tun.name(),
        "TUN offload: {}",
        settings
            .offload
            .describe("server.offload", DATA_PATH_HANDLES_VNET_HDR, tun.offloads())
    );
    Ok(tun)
}
