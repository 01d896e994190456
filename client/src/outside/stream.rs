//! Reading length-prefixed frames off a byte stream (the TCP outside).
//!
//! [`FrameReader`] reads into proto's [`FrameAssembler`] and hands out each
//! whole frame where it lies, for the caller to open in place. It asks the
//! assembler where the next frame is ([`FrameAssembler::peek_frame`]) before
//! taking it, so its loop can choose between returning a frame and reading
//! more; and how many bytes end the frame in progress
//! ([`FrameAssembler::needed`]), so that an [`exact`](FrameReader::exact)
//! reader never reads past them: after the handshake response nothing of the
//! session is buffered yet, and the session's reader starts afresh with its
//! frame limit taken from the MTU the response announced.
//!
//! Every await is a single `read` whose bytes are recorded only once it
//! completes, so [`FrameReader::next_frame`] is cancel-safe.

use std::io;

use ringway_proto::wire::{self, FrameAssembler};
use tokio::io::{AsyncRead, AsyncReadExt as _};

use super::RecvError;

/// How many bytes a session's reader asks the socket for at most: many frames
/// per read when the server sends a burst.
pub(crate) const STREAM_BUFFER: usize = 64 << 10;

/// Frames from a stream, each handed out in place.
#[derive(Debug)]
pub(crate) struct FrameReader<R> {
    read: R,
    frames: FrameAssembler,
    /// Never read past the end of the frame in progress.
    exact: bool,
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
        FrameReader {
            read,
            frames: FrameAssembler::new(capacity, max_frame),
            exact,
        }
    }

    /// The same stream as a session reader (see [`FrameReader::new`]).
    ///
    /// Call it between frames, which an exact reader always is once it has
    /// handed out a frame: it buffers nothing beyond the frame in progress.
    pub(crate) fn into_session(self, max_frame: usize) -> Self {
        debug_assert_eq!(self.frames.buffered(), 0, "switching readers mid-frame");
        Self::new(self.read, max_frame)
    }

    /// Waits for the next whole frame and returns it, in place in the buffer.
    ///
    /// [`RecvError::Closed`] when the stream ends (between frames or inside
    /// one), [`RecvError::ConnectionLost`] when reading fails, and
    /// [`RecvError::Corrupt`] for a length prefix of zero or over the limit;
    /// after any error the stream is unusable. Cancel-safe.
    pub(crate) async fn next_frame(&mut self) -> Result<&mut [u8], RecvError> {
        loop {
            // A bad length stays at the front: asking again gives the same
            // error instead of reading past it.
            if let Some(frame) = self.frames.peek_frame().map_err(RecvError::Corrupt)? {
                return self
                    .frames
                    .take_frame(frame)
                    .ok_or(RecvError::Corrupt(wire::Error::Truncated));
            }
            let needed = self.frames.needed();
            let spare = self.frames.spare_mut();
            let want = if self.exact {
                needed.min(spare.len())
            } else {
                spare.len()
            };
            if want == 0 {
                // The assembler always has room for a maximal frame, and
                // refuses a longer length at once: cannot happen.
                return Err(RecvError::Corrupt(wire::Error::TooLong));
            }
            match self.read.read(&mut spare[..want]).await {
                Ok(0) => return Err(RecvError::Closed),
                Ok(n) => self.frames.commit(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(RecvError::ConnectionLost(e)),
            }
        }
    }

    /// Bytes read but not yet handed out as frames.
    #[cfg(test)]
    fn buffered(&self) -> usize {
        self.frames.buffered()
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
