//! The initiator's side of the handshake.

use std::time::Instant;

use super::{
    builder, draw_ephemeral, internal, HandshakeError, InitPayload, PublicKey, SecretKey,
    EPHEMERAL_LEN, PROLOGUE, PSK_LOCATION, ZERO_PSK,
};
use crate::config::SessionConfig;
use crate::random::Entropy;
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
/// A response that fails to read (forged, corrupted, keyed differently) does
/// not use it up: Noise state after a failed read is not reusable, so the
/// state is rebuilt from the initiation's own ingredients (our keys, the
/// payload and the ephemeral key drawn for it) for the next response that
/// claims to answer. A forgery racing ahead of the genuine answer therefore
/// cannot make the client miss that answer.
pub struct ClientHandshake {
    keys: ClientKeys,
    payload: InitPayload,
    ephemeral: [u8; EPHEMERAL_LEN],
    sender_index: u32,
    /// Noise state after message 1; `None` once a read failed with it.
    hs: Option<snow::HandshakeState>,
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
    /// response. The ephemeral key and the sender index come from `rng`.
    pub fn initiate<R: Entropy + ?Sized>(
        keys: &ClientKeys,
        payload: InitPayload,
        rng: &mut R,
        out: &mut [u8; INIT_LEN],
    ) -> Result<Self, HandshakeError> {
        let ephemeral = draw_ephemeral(rng)?;
        let sender_index = rng.next_u32()?;
        let hs = write_init(keys, &payload, ephemeral, sender_index, out)?;
        Ok(ClientHandshake {
            keys: keys.clone(),
            payload,
            ephemeral,
            sender_index,
            hs: Some(hs),
        })
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

    /// Reads the response and derives the session. A failure leaves this
    /// handshake able to read another response (see the type's doc).
    pub fn handle_response(
        &mut self,
        frame: &[u8],
        now: Instant,
    ) -> Result<(Session, SessionConfig), HandshakeError> {
        let resp = RespFrame::new_checked(frame)?;
        if resp.receiver_index() != self.sender_index {
            return Err(HandshakeError::NotForUs);
        }
        let mut hs = match self.hs.take() {
            Some(hs) => hs,
            None => {
                // The same ephemeral key and payload write the same message 1,
                // leaving the state exactly as the initiation did.
                let mut scratch = [0u8; INIT_LEN];
                write_init(
                    &self.keys,
                    &self.payload,
                    self.ephemeral,
                    self.sender_index,
                    &mut scratch,
                )?
            }
        };
        let mut payload = [0u8; RESP_PAYLOAD_LEN + 16];
        let n = hs
            .read_message(resp.noise(), &mut payload)
            .map_err(|_| HandshakeError::Decrypt)?;
        let config = SessionConfig::parse(&payload[..n])?;
        if !hs.is_handshake_finished() {
            return Err(HandshakeError::Internal(
                "handshake not finished after message 2".into(),
            ));
        }
        let (to_server, to_client) = hs.dangerously_get_raw_split();
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

/// Builds the initiator's Noise state and writes message 1, with its
/// envelope and mac1, into `out`.
fn write_init(
    keys: &ClientKeys,
    payload: &InitPayload,
    ephemeral: [u8; EPHEMERAL_LEN],
    sender_index: u32,
    out: &mut [u8; INIT_LEN],
) -> Result<snow::HandshakeState, HandshakeError> {
    let psk = keys.psk.as_ref().unwrap_or(&ZERO_PSK);
    let mut hs = builder(ephemeral)
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
    Ok(hs)
}
