//! Turning Ctrl-C into an orderly teardown.
//!
//! By default SIGINT kills a process without running destructors, which would leave the
//! testbed's namespaces behind. A long-running program (the demo) calls [`catch`] once and
//! checks [`interrupted`] between steps; the step in flight ends on its own bound (or sooner,
//! since the terminal also interrupts our children), and the guards then clean up.

use anyhow::{Context, Result};

use crate::sys;

/// Installs the SIGINT/SIGTERM flag handler for this process.
pub fn catch() -> Result<()> {
    sys::catch_interrupts().context("installing SIGINT/SIGTERM handlers")
}

/// Whether SIGINT or SIGTERM arrived since [`catch`].
pub fn interrupted() -> bool {
    sys::interrupted()
}
