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
/// and [`FrameAssembler::next_frame`] yields each complete frame in place.
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

    /// The next complete frame, if one is buffered, for the caller to process in
    /// place. An invalid length is an error after which the stream cannot be
    /// resynchronised: close it.
    pub fn next_frame(&mut self) -> Result<Option<&mut [u8]>, Error> {
        let avail = &self.buf[self.start..self.end];
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
        let total = STREAM_PREFIX_LEN + len;
        if avail.len() < total {
            return Ok(None);
        }
        let frame_start = self.start + STREAM_PREFIX_LEN;
        self.start += total;
        if self.start == self.end {
            // Everything consumed: the next read can use the whole buffer
            // without a compaction. The frame's bytes are untouched until then.
            self.start = 0;
            self.end = 0;
        }
        Ok(Some(&mut self.buf[frame_start..frame_start + len]))
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
