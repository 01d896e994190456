//! Reading length-prefixed frames off a byte stream (the TCP outside).
//!
//! [`FrameReader`] reads into its own buffer, up to [`STREAM_BUFFER`] bytes per
//! read, and hands out every whole frame a read brought where it lies
//! ([`FrameReader::next_frames`]), so the receiver opens a whole batch in
//! place and writes its packets from there: the frames stay put until the
//! next call, which first moves the partial frame at the end (if any) to the
//! front and reads behind it.
//!
//! ```text
//!  buf: | len | frame 0 | len | frame 1 | ... | len | partial frame ...|   free   |
//!        ^start                                 ^ start after this batch  ^end
//! ```
//!
//! The framing rules are proto's (`wire::stream`): a 2-byte big-endian length,
//! never 0, never over the session's frame limit (refused as soon as the
//! prefix arrives). The reader keeps its own buffer rather than proto's
//! `FrameAssembler` because that hands out one frame at a time, and a batch
//! needs them all at once. An [`exact`](FrameReader::exact) reader (the
//! handshake's) never reads past the end of the frame in progress: after the
//! handshake response nothing of the session is buffered yet, and the
//! session's reader starts afresh with its frame limit taken from the MTU the
//! response announced.
//!
//! Every await is a single `read` whose bytes are recorded only once it
//! completes, so [`FrameReader::next_frames`] is cancel-safe.

use std::io;
use std::ops::Range;

use ringway_proto::wire::{self, STREAM_PREFIX_LEN};
use tokio::io::{AsyncRead, AsyncReadExt as _};

use super::RecvError;
use crate::stats::{bump, inc, Stats};

/// How many bytes a session's reader asks the socket for at most: many frames
/// per read when the server sends a burst.
pub(crate) const STREAM_BUFFER: usize = 64 << 10;

/// Frames from a stream, handed out in place, a batch at a time.
#[derive(Debug)]
pub(crate) struct FrameReader<R> {
    read: R,
    buf: Box<[u8]>,
    /// The first byte not yet handed out.
    start: usize,
    /// The end of what was read.
    end: usize,
    max_frame: usize,
    /// Never read past the end of the frame in progress.
    exact: bool,
    /// The frames of the last batch (allocated once).
    frames: Vec<Range<usize>>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader for an established session: reads as much as its buffer
    /// takes, and refuses a frame longer than `max_frame` as soon as its
    /// length arrives.
    pub(crate) fn new(read: R, max_frame: usize) -> Self {
        Self::with(read, STREAM_BUFFER, max_frame, false)
    }

    /// A reader for the handshake: frames of any length, and never a byte past
    /// the end of the frame in progress (see the module doc).
    pub(crate) fn exact(read: R) -> Self {
        Self::with(read, 0, wire::transport::MAX_FRAME_LEN, true)
    }

    fn with(read: R, capacity: usize, max_frame: usize, exact: bool) -> Self {
        let max_frame = max_frame.clamp(1, usize::from(u16::MAX));
        // Always room for one maximal frame with its prefix.
        let capacity = capacity.max(STREAM_PREFIX_LEN + max_frame);
        FrameReader {
            read,
            buf: vec![0u8; capacity].into_boxed_slice(),
            start: 0,
            end: 0,
            max_frame,
            exact,
            frames: Vec::new(),
        }
    }

    /// The same stream as a session reader (see [`FrameReader::new`]).
    ///
    /// Call it between frames, which an exact reader always is once it has
    /// handed out a frame: it buffers nothing beyond the frame in progress.
    pub(crate) fn into_session(self, max_frame: usize) -> Self {
        debug_assert_eq!(self.buffered(), 0, "switching readers mid-frame");
        let mut reader = Self::new(self.read, max_frame);
        reader.frames = Vec::with_capacity(super::MAX_RECV_BATCH);
        reader
    }

    /// Waits for the next whole frame and returns it, in place in the buffer.
    ///
    /// [`RecvError::Closed`] when the stream ends (between frames or inside
    /// one), [`RecvError::ConnectionLost`] when reading fails, and
    /// [`RecvError::Corrupt`] for a length prefix of zero or over the limit;
    /// after any error the stream is unusable. Cancel-safe.
    pub(crate) async fn next_frame(&mut self) -> Result<&mut [u8], RecvError> {
        let (buf, frames) = self.next_frames(1, &Stats::default()).await?;
        let frame = frames.first().cloned().unwrap_or_default();
        Ok(&mut buf[frame])
    }

    /// Waits until at least one whole frame is buffered, then hands out up to
    /// `max` of them (every one buffered, up to `max`): the buffer and where
    /// each frame lies in it. Reads are counted in `stats`.
    ///
    /// Errors as [`next_frame`](Self::next_frame); a bad length after good
    /// frames is reported by the call after the one that hands those out.
    /// Cancel-safe.
    pub(crate) async fn next_frames(
        &mut self,
        max: usize,
        stats: &Stats,
    ) -> Result<(&mut [u8], &[Range<usize>]), RecvError> {
        loop {
            self.frames.clear();
            let mut at = self.start;
            let mut bad = None;
            while self.frames.len() < max.max(1) {
                match self.frame_at(at) {
                    Ok(Some(frame)) => {
                        at = frame.end;
                        self.frames.push(frame);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        bad = Some(e);
                        break;
                    }
                }
            }
            if !self.frames.is_empty() {
                self.start = at;
                bump(&stats.rx.tcp_frames, self.frames.len() as u64);
                return Ok((&mut self.buf[..], &self.frames));
            }
            if let Some(e) = bad {
                // The bad length stays at the front: asking again gives the
                // same error instead of reading past it.
                return Err(RecvError::Corrupt(e));
            }
            self.compact();
            let spare = self.buf.len() - self.end;
            let want = if self.exact {
                self.needed().min(spare)
            } else {
                spare
            };
            if want == 0 {
                // The buffer always has room for a maximal frame, and a longer
                // length is refused at once: cannot happen.
                return Err(RecvError::Corrupt(wire::Error::TooLong));
            }
            match self
                .read
                .read(&mut self.buf[self.end..self.end + want])
                .await
            {
                Ok(0) => return Err(RecvError::Closed),
                Ok(n) => {
                    self.end += n.min(want);
                    inc(&stats.rx.tcp_reads);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(RecvError::ConnectionLost(e)),
            }
        }
    }

    /// The whole frame whose prefix starts at `at`, if all of it is buffered.
    fn frame_at(&self, at: usize) -> Result<Option<Range<usize>>, wire::Error> {
        let avail = &self.buf[at..self.end];
        let Some(len) = self.prefix_len(avail)? else {
            return Ok(None);
        };
        if avail.len() < STREAM_PREFIX_LEN + len {
            return Ok(None);
        }
        let start = at + STREAM_PREFIX_LEN;
        Ok(Some(start..start + len))
    }

    /// The length a complete prefix at the front of `avail` announces.
    fn prefix_len(&self, avail: &[u8]) -> Result<Option<usize>, wire::Error> {
        let Some(prefix) = avail.get(..STREAM_PREFIX_LEN) else {
            return Ok(None);
        };
        match usize::from(u16::from_be_bytes([prefix[0], prefix[1]])) {
            0 => Err(wire::Error::InvalidField),
            len if len > self.max_frame => Err(wire::Error::TooLong),
            len => Ok(Some(len)),
        }
    }

    /// Bytes the frame in progress still needs: the rest of its prefix, then
    /// the rest of its body.
    fn needed(&self) -> usize {
        let avail = &self.buf[self.start..self.end];
        match self.prefix_len(avail) {
            Ok(Some(len)) => (STREAM_PREFIX_LEN + len).saturating_sub(avail.len()),
            Ok(None) => STREAM_PREFIX_LEN - avail.len(),
            Err(_) => 0,
        }
    }

    /// Moves the frame in progress to the front, so a maximal frame fits behind.
    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// Bytes read but not yet handed out as frames.
    pub(crate) fn buffered(&self) -> usize {
        self.end - self.start
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use ringway_proto::wire::stream::encode_prefix;
    use ringway_proto::wire::STREAM_PREFIX_LEN;
    use tokio::io::ReadBuf;

    use super::*;

    /// A stream that returns its chunks one per read (splitting a chunk only
    /// when the reader asks for less), then ends.
    #[derive(Debug, Default)]
    struct Chunks {
        chunks: VecDeque<Vec<u8>>,
        reads: usize,
    }

    impl Chunks {
        fn new(chunks: impl IntoIterator<Item = Vec<u8>>) -> Self {
            Chunks {
                chunks: chunks.into_iter().collect(),
                reads: 0,
            }
        }

        fn remaining(&self) -> usize {
            self.chunks.iter().map(Vec::len).sum()
        }
    }

    impl AsyncRead for Chunks {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.reads += 1;
            if let Some(front) = self.chunks.front_mut() {
                let n = front.len().min(buf.remaining());
                buf.put_slice(&front[..n]);
                front.drain(..n);
                if front.is_empty() {
                    self.chunks.pop_front();
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    fn frame(seq: u8, len: usize) -> Vec<u8> {
        (0..len).map(|i| seq.wrapping_add(i as u8)).collect()
    }

    fn stream_of(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in frames {
            out.extend_from_slice(&encode_prefix(f.len()).unwrap());
            out.extend_from_slice(f);
        }
        out
    }

    fn chunked(data: &[u8], sizes: &[usize]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut rest = data;
        for &size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let n = size.min(rest.len());
            out.push(rest[..n].to_vec());
            rest = &rest[n..];
        }
        out
    }

    async fn read_all<R: AsyncRead + Unpin>(
        reader: &mut FrameReader<R>,
    ) -> (Vec<Vec<u8>>, RecvError) {
        let mut got = Vec::new();
        loop {
            match reader.next_frame().await {
                Ok(f) => got.push(f.to_vec()),
                Err(e) => return (got, e),
            }
        }
    }

    fn some_frames() -> Vec<Vec<u8>> {
        vec![
            frame(1, 1452),
            frame(2, 32),
            frame(3, 1),
            frame(4, 700),
            frame(5, 255),
            frame(6, 256),
            frame(7, 1452),
        ]
    }

    #[tokio::test]
    async fn frames_split_across_reads() {
        let frames = some_frames();
        let data = stream_of(&frames);
        for sizes in [&[1][..], &[2], &[3, 1, 7], &[1451, 5], &[1454]] {
            let mut reader = FrameReader::new(Chunks::new(chunked(&data, sizes)), 1452);
            let (got, end) = read_all(&mut reader).await;
            assert_eq!(got, frames, "chunks of {sizes:?}");
            assert!(matches!(end, RecvError::Closed), "{end}");
        }
    }

    #[tokio::test]
    async fn frames_packed_in_one_read() {
        let frames = some_frames();
        let data = stream_of(&frames);
        let mut reader = FrameReader::new(Chunks::new([data]), 1452);
        let (got, _) = read_all(&mut reader).await;
        assert_eq!(got, frames);
        // One read for all of them, and one more to see the end.
        assert_eq!(reader.read.reads, 2);
    }

    #[tokio::test]
    async fn stream_ending_inside_a_frame_is_closed() {
        let data = stream_of(&some_frames());
        let mut reader = FrameReader::new(Chunks::new([data[..100].to_vec()]), 1452);
        let (got, end) = read_all(&mut reader).await;
        assert!(got.is_empty());
        assert!(matches!(end, RecvError::Closed), "{end}");
        assert_eq!(reader.buffered(), 100);
    }

    #[tokio::test]
    async fn exact_reader_stops_at_the_frame_end() {
        let frames = some_frames();
        let data = stream_of(&frames);
        // All of it offered in one chunk: an exact reader still takes only the first frame.
        let mut reader = FrameReader::exact(Chunks::new([data.clone()]));
        assert_eq!(reader.next_frame().await.unwrap(), &frames[0][..]);
        assert_eq!(reader.buffered(), 0);
        assert_eq!(
            reader.read.remaining(),
            data.len() - STREAM_PREFIX_LEN - frames[0].len()
        );
        // And also when the first frame's bytes come in pieces.
        let mut reader = FrameReader::exact(Chunks::new(chunked(&data, &[1, 2, 3, 1000])));
        assert_eq!(reader.next_frame().await.unwrap(), &frames[0][..]);
        assert_eq!(reader.buffered(), 0);
        let mut reader = reader.into_session(1452);
        let (got, _) = read_all(&mut reader).await;
        assert_eq!(got, frames[1..]);
    }

    #[tokio::test]
    async fn bad_lengths_are_corrupt_without_waiting_for_more() {
        // Zero length, after a good frame that must still come out.
        let mut data = stream_of(&[frame(1, 10)]);
        data.extend_from_slice(&[0, 0, 9, 9, 9]);
        let mut reader = FrameReader::new(Chunks::new([data]), 1452);
        let (got, end) = read_all(&mut reader).await;
        assert_eq!(got, [frame(1, 10)]);
        assert!(
            matches!(end, RecvError::Corrupt(wire::Error::InvalidField)),
            "{end}"
        );
        // Asking again gives the same answer rather than reading on.
        assert!(matches!(
            reader.next_frame().await,
            Err(RecvError::Corrupt(_))
        ));

        // Over the limit: refused from the prefix alone, although the stream
        // then ends (waiting for the body would have said Closed).
        let mut reader = FrameReader::new(Chunks::new([1453u16.to_be_bytes().to_vec()]), 1452);
        let (_, end) = read_all(&mut reader).await;
        assert!(
            matches!(end, RecvError::Corrupt(wire::Error::TooLong)),
            "{end}"
        );
    }
}
