//! The initiator's side of the handshake.

use std::time::Instant;

use super::{
    internal, params, HandshakeError, InitPayload, PublicKey, SecretKey, PROLOGUE, PSK_LOCATION,
    ZERO_PSK,
};
use crate::config::SessionConfig;
use crate::session::Session;
use crate::wire::handshake::{
    self as hsw, RejectFrame, RejectReason, RespFrame, INIT_LEN, RESP_PAYLOAD_LEN,
};

/// What a client needs to start a handshake. Its `Debug` hides the secrets.
#[derive(Clone)]
pub struct ClientKeys {
    /// The client's static secret.
    pub secret: SecretKey,
    /// The server's static public key, pinned from the client config.
    pub server_public: PublicKey,
    /// The optional pre-shared key for this peer.
    pub psk: Option<[u8; 32]>,
}

impl std::fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKeys")
            .field("secret", &self.secret)
            .field("server_public", &self.server_public)
            .field("psk", &self.psk.map(|_| ".."))
            .finish()
    }
}

/// A handshake whose initiation has been sent, waiting for the response.
///
/// Reading a response consumes it whether or not the response is good: Noise
/// state after a failed read is not reusable, so on error the client starts a
/// fresh initiation (it would retransmit anyway).
pub struct ClientHandshake {
    hs: snow::HandshakeState,
    sender_index: u32,
}

impl std::fmt::Debug for ClientHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientHandshake")
            .field("sender_index", &self.sender_index)
            .finish_non_exhaustive()
    }
}

impl ClientHandshake {
    /// Writes an initiation into `out` and returns the state awaiting its
    /// response. `sender_index` should be random (the caller supplies it).
    pub fn initiate(
        keys: &ClientKeys,
        payload: InitPayload,
        sender_index: u32,
        out: &mut [u8; INIT_LEN],
    ) -> Result<Self, HandshakeError> {
        let psk = keys.psk.as_ref().unwrap_or(&ZERO_PSK);
        let mut hs = snow::Builder::new(params())
            .local_private_key(keys.secret.as_bytes())
            .and_then(|b| b.remote_public_key(keys.server_public.as_bytes()))
            .and_then(|b| b.prologue(PROLOGUE))
            .and_then(|b| b.psk(PSK_LOCATION, psk))
            .and_then(|b| b.build_initiator())
            .map_err(internal)?;
        hsw::emit_init_header(out, sender_index);
        let n = hs
            .write_message(&payload.emit(), hsw::init_noise_mut(out))
            .map_err(internal)?;
        if n != hsw::INIT_NOISE_LEN {
            return Err(HandshakeError::Internal(format!(
                "noise message 1 is {n} bytes"
            )));
        }
        let mac = super::server::mac1(&keys.server_public, &out[..INIT_LEN - hsw::MAC_LEN]);
        hsw::init_mac_mut(out).copy_from_slice(mac.as_ref());
        Ok(ClientHandshake { hs, sender_index })
    }

    /// The index responses to this initiation carry.
    pub fn sender_index(&self) -> u32 {
        self.sender_index
    }

    /// Whether `frame` claims to answer this initiation; cheap, and does not
    /// touch the Noise state, so strays can be ignored without losing it.
    pub fn is_response_to_me(&self, frame: &[u8]) -> bool {
        RespFrame::new_checked(frame).is_ok_and(|f| f.receiver_index() == self.sender_index)
    }

    /// If `frame` is a reject answering this initiation, why. A reject is not
    /// authenticated: keep waiting for a genuine response until the deadline,
    /// and use the reason to explain the failure if none comes.
    pub fn reject_reason(&self, frame: &[u8]) -> Option<RejectReason> {
        RejectFrame::new_checked(frame)
            .ok()
            .filter(|r| r.receiver_index() == self.sender_index)
            .map(|r| r.reason())
    }

    /// Reads the response and derives the session.
    pub fn handle_response(
        mut self,
        frame: &[u8],
        now: Instant,
    ) -> Result<(Session, SessionConfig), HandshakeError> {
        let resp = RespFrame::new_checked(frame)?;
        if resp.receiver_index() != self.sender_index {
            return Err(HandshakeError::NotForUs);
        }
        let mut payload = [0u8; RESP_PAYLOAD_LEN + 16];
        let n = self
            .hs
            .read_message(resp.noise(), &mut payload)
            .map_err(|_| HandshakeError::Decrypt)?;
        let config = SessionConfig::parse(&payload[..n])?;
        if !self.hs.is_handshake_finished() {
            return Err(HandshakeError::Internal(
                "handshake not finished after message 2".into(),
            ));
        }
        let (to_server, to_client) = self.hs.dangerously_get_raw_split();
        let session = Session::new(
            resp.session_id(),
            config.cipher,
            &to_server,
            &to_client,
            config.keepalive(),
            config.idle_timeout(),
            now,
        );
        Ok((session, config))
    }
}
