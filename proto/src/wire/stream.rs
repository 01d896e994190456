//! Framing over a byte stream (TCP): each frame preceded by its length.
//!
//! ```text
//! +-------+-------+---------------------------------+
//! |  length (u16) |  frame (length bytes)           |  ... next prefix, next frame
//! +-------+-------+---------------------------------+
//! ```
//!
//! A stream read may end anywhere: inside a prefix, inside a frame, or after
//! several frames. [`FrameAssembler`] keeps the partial tail between reads in a
//! fixed buffer it never grows, so a peer cannot make it allocate, and it
//! rejects a length over the negotiated maximum as soon as the prefix arrives
//! instead of waiting for bytes that would never fit.

use std::ops::Range;

use super::Error;

/// Bytes of length prefix in front of every frame on a stream.
pub const STREAM_PREFIX_LEN: usize = 2;

/// Writes the prefix for a frame of `frame_len` bytes.
pub fn encode_prefix(frame_len: usize) -> Result<[u8; STREAM_PREFIX_LEN], Error> {
    let len = u16::try_from(frame_len).map_err(|_| Error::TooLong)?;
    if len == 0 {
        return Err(Error::InvalidField);
    }
    Ok(len.to_be_bytes())
}

/// Reassembles length-prefixed frames from stream reads.
///
/// Reads go straight into [`FrameAssembler::spare_mut`] (so an io_uring receive
/// can target it), then [`FrameAssembler::commit`] says how many bytes arrived
/// and [`FrameAssembler::next_frame`] yields each complete frame in place (or
/// [`FrameAssembler::peek_frame`] says where it is, for a caller that decides
/// before taking it).
#[derive(Debug)]
pub struct FrameAssembler {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    max_frame: usize,
}

impl FrameAssembler {
    /// An assembler accepting frames of up to `max_frame` bytes, reading into a
    /// buffer of `capacity` bytes (raised to hold at least one whole maximal
    /// frame with its prefix).
    pub fn new(capacity: usize, max_frame: usize) -> Self {
        let max_frame = max_frame.clamp(1, u16::MAX as usize);
        let capacity = capacity.max(max_frame + STREAM_PREFIX_LEN);
        FrameAssembler {
            buf: vec![0u8; capacity].into_boxed_slice(),
            start: 0,
            end: 0,
            max_frame,
        }
    }

    /// Free space for the next read. Moves any partial frame to the front
    /// first, so the space is always at least what a maximal frame needs.
    pub fn spare_mut(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// Records that the last read put `n` bytes into [`FrameAssembler::spare_mut`].
    ///
    /// A count larger than the spare space is clamped: stream APIs never return
    /// more than asked, and trusting a wrong count would read uninitialised tail.
    pub fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Where the next complete frame lies in the buffer, without taking it:
    /// `None` until all of it has arrived. An invalid length is an error after
    /// which the stream cannot be resynchronised: close it.
    ///
    /// Peeking borrows nothing, so a read loop can decide between handing out
    /// a frame ([`FrameAssembler::take_frame`]) and reading more without the
    /// two borrows meeting.
    pub fn peek_frame(&self) -> Result<Option<Range<usize>>, Error> {
        let avail = &self.buf[self.start..self.end];
        let Some(len) = self.prefix_len(avail)? else {
            return Ok(None);
        };
        if avail.len() < STREAM_PREFIX_LEN + len {
            return Ok(None);
        }
        let frame_start = self.start + STREAM_PREFIX_LEN;
        Ok(Some(frame_start..frame_start + len))
    }

    /// Takes the frame [`FrameAssembler::peek_frame`] just returned and hands
    /// it out in place. `None` if `frame` is not the next frame (a misuse).
    pub fn take_frame(&mut self, frame: Range<usize>) -> Option<&mut [u8]> {
        if frame.start != self.start + STREAM_PREFIX_LEN || frame.end > self.end {
            return None;
        }
        self.start = frame.end;
        if self.start == self.end {
            // Everything consumed: the next read can use the whole buffer
            // without a compaction. The frame's bytes are untouched until then.
            self.start = 0;
            self.end = 0;
        }
        self.buf.get_mut(frame)
    }

    /// The next complete frame, if one is buffered, for the caller to process in
    /// place: [`FrameAssembler::peek_frame`] and [`FrameAssembler::take_frame`]
    /// in one call.
    pub fn next_frame(&mut self) -> Result<Option<&mut [u8]>, Error> {
        match self.peek_frame()? {
            Some(frame) => Ok(self.take_frame(frame)),
            None => Ok(None),
        }
    }

    /// How many more bytes the next frame needs before it is complete: the
    /// rest of its length prefix while that is incomplete, then the rest of
    /// its body; 0 once it is complete (or its length is invalid, which
    /// [`FrameAssembler::peek_frame`] reports). A reader that must not read
    /// past a frame (a handshake, whose successor has other limits) asks for
    /// no more than this.
    pub fn needed(&self) -> usize {
        let avail = &self.buf[self.start..self.end];
        match self.prefix_len(avail) {
            Ok(Some(len)) => (STREAM_PREFIX_LEN + len).saturating_sub(avail.len()),
            Ok(None) => STREAM_PREFIX_LEN - avail.len(),
            Err(_) => 0,
        }
    }

    /// The length a complete prefix at the front of `avail` announces.
    fn prefix_len(&self, avail: &[u8]) -> Result<Option<usize>, Error> {
        let Some(prefix) = avail.get(..STREAM_PREFIX_LEN) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
        if len == 0 {
            return Err(Error::InvalidField);
        }
        if len > self.max_frame {
            return Err(Error::TooLong);
        }
        Ok(Some(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stream_of(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in frames {
            out.extend_from_slice(&encode_prefix(f.len()).unwrap());
            out.extend_from_slice(f);
        }
        out
    }

    fn feed(
        asm: &mut FrameAssembler,
        mut data: &[u8],
        chunk: usize,
    ) -> Result<Vec<Vec<u8>>, Error> {
        let mut got = Vec::new();
        while !data.is_empty() {
            let spare = asm.spare_mut();
            let n = chunk.min(spare.len()).min(data.len());
            spare[..n].copy_from_slice(&data[..n]);
            asm.commit(n);
            data = &data[n..];
            while let Some(f) = asm.next_frame()? {
                got.push(f.to_vec());
            }
        }
        Ok(got)
    }

    #[test]
    fn frames_split_across_reads() {
        let frames = vec![vec![1u8; 100], vec![2u8; 3], vec![3u8; 1]];
        let data = stream_of(&frames);
        let mut asm = FrameAssembler::new(0, 200);
        assert_eq!(feed(&mut asm, &data, 1).unwrap(), frames);
        assert_eq!(asm.buffered(), 0);
    }

    #[test]
    fn frames_packed_in_one_read() {
        let frames = vec![vec![9u8; 10], vec![8u8; 20], vec![7u8; 30]];
        let data = stream_of(&frames);
        let mut asm = FrameAssembler::new(4096, 200);
        assert_eq!(feed(&mut asm, &data, data.len()).unwrap(), frames);
    }

    #[test]
    fn oversized_length_rejected_from_prefix_alone() {
        let mut asm = FrameAssembler::new(0, 100);
        let spare = asm.spare_mut();
        spare[..2].copy_from_slice(&101u16.to_be_bytes());
        asm.commit(2);
        assert_eq!(asm.next_frame().unwrap_err(), Error::TooLong);
    }

    #[test]
    fn zero_length_rejected() {
        let mut asm = FrameAssembler::new(0, 100);
        asm.spare_mut()[..2].fill(0);
        asm.commit(2);
        assert_eq!(asm.next_frame().unwrap_err(), Error::InvalidField);
        assert_eq!(encode_prefix(0), Err(Error::InvalidField));
        assert_eq!(encode_prefix(70_000), Err(Error::TooLong));
    }

    #[test]
    fn commit_is_clamped() {
        let mut asm = FrameAssembler::new(0, 10);
        let cap = asm.spare_mut().len();
        asm.commit(cap + 100);
        assert_eq!(asm.buffered(), cap);
    }

    #[test]
    fn peek_does_not_consume_and_needed_counts_down() {
        let frames = vec![vec![1u8; 5], vec![2u8; 3]];
        let data = stream_of(&frames);
        let mut asm = FrameAssembler::new(0, 100);
        assert_eq!(asm.needed(), STREAM_PREFIX_LEN);
        let mut fed = 0;
        // Byte by byte: `needed` is exactly what completes the first frame.
        while asm.peek_frame().unwrap().is_none() {
            let want = asm.needed();
            assert_eq!(want, if fed < 2 { 2 - fed } else { 7 - fed });
            asm.spare_mut()[0] = data[fed];
            asm.commit(1);
            fed += 1;
        }
        assert_eq!(fed, 7);
        assert_eq!(asm.needed(), 0);
        let first = asm.peek_frame().unwrap().unwrap();
        assert_eq!(asm.peek_frame().unwrap(), Some(first.clone()));
        // Only the peeked frame can be taken.
        assert!(asm.take_frame(first.start + 1..first.end).is_none());
        assert_eq!(asm.take_frame(first).unwrap(), &frames[0][..]);
        assert_eq!(asm.buffered(), 0);
        assert_eq!(asm.needed(), STREAM_PREFIX_LEN);
        // A bad length: peek reports it every time, and nothing more is needed.
        asm.spare_mut()[..2].fill(0);
        asm.commit(2);
        assert_eq!(asm.peek_frame().unwrap_err(), Error::InvalidField);
        assert_eq!(asm.peek_frame().unwrap_err(), Error::InvalidField);
        assert_eq!(asm.needed(), 0);
    }

    proptest! {
        #[test]
        fn any_chunking_yields_the_same_frames(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 0..20),
            chunk in 1usize..700,
        ) {
            let data = stream_of(&frames);
            let mut asm = FrameAssembler::new(0, 300);
            prop_assert_eq!(feed(&mut asm, &data, chunk).unwrap(), frames);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2000), chunk in 1usize..500) {
            let mut asm = FrameAssembler::new(0, 1500);
            let _ = feed(&mut asm, &data, chunk);
        }
    }
}
