//! The TUN device as the inside, and the lifetime of the device.
//!
//! [`Tun`] owns the device; the reader and writer the driver uses hold shared
//! references to it. The device (with its address and routes) goes away when
//! its file descriptor closes, so cleanup is closing the last reference, which
//! [`Tun::close`] does explicitly once the driver has stopped. If it cannot
//! (something still holds the device), it deletes the link instead. Dropping a
//! `Tun` without `close` does the same, so an early `?` cleans up too.

use std::io;
use std::sync::Arc;

use ringway_proto::SessionConfig;

use super::{Inside, InsideReader, InsideWriter};
use crate::platform::{self, Offload, Offloads, TunDevice, TunError};

/// An open TUN device; removed on [`close`](Tun::close) or drop.
#[derive(Debug)]
pub struct Tun {
    device: Option<Arc<TunDevice>>,
    name: String,
}

impl Tun {
    /// Creates the TUN device `name`, without addresses and down. `offload` is the mode
    /// asked for ([`Offload::Auto`]: `virtio_net_hdr`, TSO and USO where the kernel has
    /// them; [`offloads`](Self::offloads) says what it got).
    ///
    /// Must be called within a tokio runtime (the device registers with its reactor).
    pub fn create(name: &str, offload: Offload) -> Result<Tun, TunError> {
        let device = TunDevice::create(name, offload)?;
        let name = device.name().to_owned();
        Ok(Tun {
            device: Some(Arc::new(device)),
            name,
        })
    }

    /// The device's name, as the kernel gave it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the device got: `virtio_net_hdr`, TSO, USO.
    pub fn offloads(&self) -> Offloads {
        self.device
            .as_ref()
            .map_or(Offloads::OFF, |device| device.offloads())
    }

    /// Gives the device the address, prefix and MTU the server assigned and
    /// brings it up; the prefix route sends the tunnel subnet into it.
    ///
    /// Blocking: it runs `ip` (call it from `spawn_blocking` on a busy runtime).
    pub fn configure(&self, config: &SessionConfig) -> Result<(), TunError> {
        platform::configure(&self.name, config)
    }

    /// A reader/writer pair for the driver.
    pub fn inside(&self) -> TunInside {
        TunInside(Arc::clone(
            self.device
                .as_ref()
                .expect("device is only taken by close or drop"),
        ))
    }

    /// Removes the device: closes it if nothing else holds it, deletes the link otherwise.
    pub fn close(mut self) {
        self.teardown();
    }

    fn teardown(&mut self) {
        let Some(device) = self.device.take() else {
            return;
        };
        match Arc::try_unwrap(device) {
            Ok(device) => {
                drop(device);
                tracing::info!(tun = %self.name, "closed TUN device");
            }
            Err(_still_shared) => {
                tracing::warn!(tun = %self.name, "TUN device still in use; deleting the link");
                match platform::delete_link(&self.name) {
                    Ok(()) => tracing::info!(tun = %self.name, "deleted TUN device"),
                    Err(e) => tracing::warn!(tun = %self.name, "{e}"),
                }
            }
        }
    }
}

impl Drop for Tun {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// The TUN device as the driver's inside.
#[derive(Debug)]
pub struct TunInside(Arc<TunDevice>);

/// Reads packets the host routed into the TUN.
#[derive(Debug)]
pub struct TunReader(Arc<TunDevice>);

/// Writes packets for the host to receive from the TUN.
#[derive(Debug)]
pub struct TunWriter(Arc<TunDevice>);

impl Inside for TunInside {
    type Reader = TunReader;
    type Writer = TunWriter;

    fn offloads(&self) -> Offloads {
        self.0.offloads()
    }

    fn split(self) -> (TunReader, TunWriter) {
        (TunReader(Arc::clone(&self.0)), TunWriter(self.0))
    }
}

impl InsideReader for TunReader {
    async fn read_packet(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).await
    }
}

impl InsideWriter for TunWriter {
    async fn write_packet(&mut self, packet: &[u8]) -> io::Result<()> {
        self.0.write(packet).await
    }
}
