//! The responder's side of the handshake.

use std::time::Instant;

use ring::{digest, hmac};

use super::{
    builder, draw_ephemeral, internal, HandshakeError, InitPayload, PublicKey, SecretKey, PROLOGUE,
    PSK_LOCATION, ZERO_PSK,
};
use crate::config::SessionConfig;
use crate::random::Entropy;
use crate::session::Session;
use crate::wire::handshake::{self as hsw, InitFrame, INIT_PAYLOAD_LEN, RESP_LEN};

/// The mac1 key for a server: a hash of a label and its public key, so only
/// someone who knows the public key can produce a valid mac1.
fn mac1_key(server_public: &PublicKey) -> hmac::Key {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"ringway mac1");
    ctx.update(server_public.as_bytes());
    hmac::Key::new(hmac::HMAC_SHA256, ctx.finish().as_ref())
}

pub(super) fn mac1(server_public: &PublicKey, data: &[u8]) -> hmac::Tag {
    hmac::sign(&mac1_key(server_public), data)
}

/// The server's handshake identity: its static key and the derived mac1 key.
pub struct Responder {
    secret: SecretKey,
    public: PublicKey,
    mac_key: hmac::Key,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl Responder {
    /// A responder for the server's static key.
    pub fn new(secret: SecretKey) -> Self {
        let public = secret.public_key();
        let mac_key = mac1_key(&public);
        Responder {
            secret,
            public,
            mac_key,
        }
    }

    /// The server's public key, as clients pin it.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// Checks mac1 and reads message 1, learning who the client claims to be.
    /// The ephemeral key of the response to come is drawn from `rng` (only
    /// once mac1 holds, so strangers cost no entropy).
    ///
    /// The result is not yet trusted for anything but lookup: the caller must
    /// check the client key against its peer list and the timestamp against the
    /// last one accepted from that peer before calling [`PendingInit::accept`].
    pub fn read_init<R: Entropy + ?Sized>(
        &self,
        frame: &[u8],
        rng: &mut R,
    ) -> Result<PendingInit, HandshakeError> {
        let init = InitFrame::new_checked(frame)?;
        hmac::verify(&self.mac_key, init.mac_input(), init.mac())
            .map_err(|_| HandshakeError::BadMac)?;
        let mut hs = builder(draw_ephemeral(rng)?)
            .local_private_key(self.secret.as_bytes())
            .and_then(|b| b.prologue(PROLOGUE))
            .and_then(|b| b.psk(PSK_LOCATION, &ZERO_PSK))
            .and_then(|b| b.build_responder())
            .map_err(internal)?;
        let mut payload = [0u8; INIT_PAYLOAD_LEN + 16];
        let n = hs
            .read_message(init.noise(), &mut payload)
            .map_err(|_| HandshakeError::Decrypt)?;
        let payload = InitPayload::parse(&payload[..n])?;
        let client = hs
            .get_remote_static()
            .and_then(PublicKey::from_slice)
            .ok_or_else(|| HandshakeError::Internal("IK message 1 without a static key".into()))?;
        Ok(PendingInit {
            hs,
            client,
            payload,
            sender_index: init.sender_index(),
        })
    }
}

/// A verified-so-far initiation waiting for the server's decision.
pub struct PendingInit {
    hs: snow::HandshakeState,
    client: PublicKey,
    payload: InitPayload,
    sender_index: u32,
}

impl std::fmt::Debug for PendingInit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingInit")
            .field("client", &self.client)
            .field("payload", &self.payload)
            .finish_non_exhaustive()
    }
}

impl PendingInit {
    /// The static key the client proved it holds.
    pub fn client_key(&self) -> &PublicKey {
        &self.client
    }

    /// The client's timestamp and cipher preference.
    pub fn payload(&self) -> &InitPayload {
        &self.payload
    }

    /// Accepts the client: writes the response (carrying `config`) into `out`
    /// and returns the session under `session_id`.
    ///
    /// With a PSK that differs from the client's, the client will fail to read
    /// the response: PSK mismatches are detected by the client, as in WireGuard.
    pub fn accept(
        mut self,
        psk: Option<&[u8; 32]>,
        session_id: u32,
        config: &SessionConfig,
        now: Instant,
        out: &mut [u8; RESP_LEN],
    ) -> Result<Session, HandshakeError> {
        if let Some(psk) = psk {
            self.hs
                .set_psk(PSK_LOCATION.into(), psk)
                .map_err(internal)?;
        }
        hsw::emit_resp_header(out, self.sender_index, session_id);
        let n = self
            .hs
            .write_message(&config.emit(), hsw::resp_noise_mut(out))
            .map_err(internal)?;
        if n != hsw::RESP_NOISE_LEN {
            return Err(HandshakeError::Internal(format!(
                "noise message 2 is {n} bytes"
            )));
        }
        let (to_server, to_client) = self.hs.dangerously_get_raw_split();
        Ok(Session::new(
            session_id,
            config.cipher,
            &to_client,
            &to_server,
            config.keepalive(),
            config.idle_timeout(),
            now,
        ))
    }
}
