//! Each peer's newest accepted initiation timestamp, kept across restarts.
//!
//! The server accepts an initiation only if its timestamp is newer than the last one it
//! accepted from that peer; that is the whole of its replay protection for initiations. In
//! memory only, a restart forgets it, and anyone who captured an initiation could replay it
//! to a freshly started server (which would answer, and switch nothing, but spend two DH
//! operations and a session slot on it). So the timestamps are written to a small file
//! (`server.state_file`) and read back at start.
//!
//! When: at shutdown (SIGTERM/SIGINT, and when the loop stops for a failure), written to a
//! temporary file and renamed, so a crash leaves the old file or the new one, never half of
//! one. Not while running: the io_uring loop's only system call is `io_uring_enter` (the e2e
//! strace check holds it to that), so a periodic save would have to go through the ring.
//! After a crash (SIGKILL, power loss), the initiations accepted since the last clean stop
//! could be replayed once to the restarted server.
//!
//! The format is a line per peer: `<public key, base64> <seconds> <nanoseconds>`. Lines that
//! do not parse are skipped with a warning; a missing file is a first start.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use ringway_proto::handshake::{PublicKey, Timestamp};

/// Where the timestamps live, and whether memory is ahead of the file.
#[derive(Debug)]
pub struct HandshakeState {
    path: PathBuf,
    /// A write failed: said once, then retried quietly each time.
    warned: bool,
}

impl HandshakeState {
    /// The file at `path` (not read yet).
    pub fn new(path: PathBuf) -> Self {
        HandshakeState {
            path,
            warned: false,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file: each peer's last timestamp. A missing file is empty; an unreadable
    /// one is logged and treated as empty (the server still starts).
    pub fn load(&self) -> HashMap<PublicKey, Timestamp> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => parse(&text, &self.path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot read the handshake state: initiations captured before this start could be replayed once");
                HashMap::new()
            }
        }
    }

    /// Writes `entries` (replacing the file atomically). A failure is logged once (with the
    /// fix) and otherwise ignored: the server keeps serving.
    pub fn save<'a>(&mut self, entries: impl Iterator<Item = (&'a PublicKey, Timestamp)>) {
        match write_atomically(&self.path, &render(entries)) {
            Ok(()) => self.warned = false,
            Err(e) if !self.warned => {
                self.warned = true;
                tracing::warn!(path = %self.path.display(), error = %e, "cannot save the handshake state (make server.state_file writable): after a restart, captured initiations could be replayed once");
            }
            Err(_) => {}
        }
    }
}

/// Saves `sessions`' timestamps to `state` if a handshake changed them, or always with
/// `force`: what both loops do when they stop.
pub fn save_if_changed(
    state: Option<&mut HandshakeState>,
    sessions: &mut crate::sessions::Sessions,
    force: bool,
) {
    let changed = sessions.timestamps_changed();
    if let Some(state) = state {
        if changed || force {
            state.save(sessions.timestamps());
        }
    }
}

fn render<'a>(entries: impl Iterator<Item = (&'a PublicKey, Timestamp)>) -> String {
    let mut out = String::new();
    for (key, ts) in entries {
        out.push_str(&format!("{} {} {}\n", key, ts.secs, ts.nanos));
    }
    out
}

fn parse(text: &str, path: &Path) -> HashMap<PublicKey, Timestamp> {
    let mut map = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let mut fields = line.split_whitespace();
        let parsed = (|| {
            let key: PublicKey = fields.next()?.parse().ok()?;
            let secs = fields.next()?.parse().ok()?;
            let nanos = fields.next()?.parse().ok().filter(|&n| n < 1_000_000_000)?;
            fields
                .next()
                .is_none()
                .then_some((key, Timestamp { secs, nanos }))
        })();
        match parsed {
            Some((key, ts)) => {
                map.insert(key, ts);
            }
            None if line.trim().is_empty() => {}
            None => {
                tracing::warn!(path = %path.display(), line = n + 1, "skipping a malformed line of the handshake state");
            }
        }
    }
    map
}

/// Writes `text` to a temporary file beside `path` (mode 0600), syncs it, and renames it over
/// `path`.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringway_proto::handshake::Keypair;

    fn dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("ringway-hs-state-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn timestamps_survive_a_save_and_a_load() {
        let d = dir("roundtrip");
        let mut state = HandshakeState::new(d.join("last-handshakes"));
        assert!(state.load().is_empty(), "a missing file is a first start");
        let a = Keypair::from_random([1; 32]).public;
        let b = Keypair::from_random([2; 32]).public;
        let ts = |secs, nanos| Timestamp { secs, nanos };
        state.save([(&a, ts(1_800_000_000, 5)), (&b, ts(7, 999_999_999))].into_iter());
        let back = state.load();
        assert_eq!(back.len(), 2);
        assert_eq!(back[&a], ts(1_800_000_000, 5));
        assert_eq!(back[&b], ts(7, 999_999_999));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(state.path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn malformed_lines_are_skipped_and_the_rest_kept() {
        let a = Keypair::from_random([1; 32]).public;
        let text = format!(
            "garbage\n{a} 10 20\n{a} x 1\n\nAAAA 1 2\n{} 1 1000000000\n{} 3 4 5\n",
            a, a
        );
        let map = parse(&text, Path::new("t"));
        assert_eq!(map.len(), 1);
        assert_eq!(
            map[&a],
            Timestamp {
                secs: 10,
                nanos: 20
            }
        );
    }

    #[test]
    fn an_unwritable_place_is_survived() {
        let mut state = HandshakeState::new(PathBuf::from("/proc/ringway-cannot-write-here"));
        let a = Keypair::from_random([1; 32]).public;
        state.save([(&a, Timestamp { secs: 1, nanos: 0 })].into_iter());
        assert!(state.warned);
    }
}
