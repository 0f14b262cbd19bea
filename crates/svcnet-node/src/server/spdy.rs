//! The server side of SPDY/3.1 as Kubernetes streams use it (kubectl's `port-forward`, through
//! Go's spdystream): streams opened by the client with `SYN_STREAM`, answered with `SYN_REPLY`,
//! data in both directions, half-closed with `FIN`; `PING`s echoed. Header blocks are one zlib
//! stream per direction with SPDY/3's dictionary. Like spdystream, no flow control: windows are
//! neither kept nor announced.

use std::collections::HashMap;
use std::io;

use bytes::{BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const FLAG_FIN: u8 = 0x01;
/// Larger frames are a protocol error; Go's framer writes at most 16 MiB - 1.
const MAX_FRAME: usize = (1 << 24) - 1;
/// The largest data frame sent.
const MAX_DATA: usize = 32 * 1024;

/// A stream the client opened.
pub(super) struct Stream {
    /// Its headers (names lower-case, as SPDY sends them).
    pub(super) headers: Vec<(String, String)>,
    /// What the client sends on it; ends at the client's `FIN` or reset, or when the connection
    /// ends.
    pub(super) data: mpsc::Receiver<Bytes>,
    /// For sending on it.
    pub(super) writer: StreamWriter,
}

impl Stream {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Sends on one stream.
#[derive(Clone)]
pub(super) struct StreamWriter {
    id: u32,
    tx: mpsc::Sender<Outgoing>,
}

/// The connection is gone.
#[derive(Debug)]
pub(super) struct Closed;

impl StreamWriter {
    /// Sends `data` (split into frames of at most 32 KiB).
    pub(super) async fn send(&self, data: &[u8]) -> Result<(), Closed> {
        for chunk in data.chunks(MAX_DATA) {
            self.tx.send(Outgoing::Data { id: self.id, data: Bytes::copy_from_slice(chunk), fin: false }).await.map_err(|_| Closed)?;
        }
        Ok(())
    }

    /// Half-closes the stream: nothing more will be sent on it.
    pub(super) async fn finish(&self) -> Result<(), Closed> {
        self.tx.send(Outgoing::Data { id: self.id, data: Bytes::new(), fin: true }).await.map_err(|_| Closed)
    }
}

enum Outgoing {
    SynReply(u32),
    Data { id: u32, data: Bytes, fin: bool },
    Ping(u32),
}

/// Errors that end a SPDY connection.
#[derive(Debug, thiserror::Error)]
pub(super) enum Error {
    /// Reading or writing the connection failed.
    #[error("SPDY connection: {0}")]
    Io(#[from] io::Error),
    /// The peer broke the protocol.
    #[error("SPDY protocol error: {0}")]
    Protocol(String),
}

/// Serves one SPDY connection: every stream the client opens is replied to and handed to
/// `streams`. Returns when the client closes the connection or sends `GOAWAY`.
pub(super) async fn serve<IO>(io: IO, streams: mpsc::UnboundedSender<Stream>) -> Result<(), Error>
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, writer) = tokio::io::split(io);
    let (tx, rx) = mpsc::channel::<Outgoing>(64);
    let writer_task = tokio::spawn(write_frames(writer, rx));
    let result = read_frames(&mut reader, &tx, &streams).await;
    drop(tx);
    // Streams still being answered keep the writer going until they finish.
    let _ = writer_task.await;
    result
}

async fn read_frames<R: AsyncRead + Unpin>(reader: &mut R, tx: &mpsc::Sender<Outgoing>, streams: &mpsc::UnboundedSender<Stream>) -> Result<(), Error> {
    let mut headers = HeaderDecoder::new();
    let mut open: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    let mut head = [0u8; 8];
    loop {
        match reader.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let flags = head[4];
        let length = usize::from(head[5]) << 16 | usize::from(head[6]) << 8 | usize::from(head[7]);
        if length > MAX_FRAME {
            return Err(Error::Protocol(format!("frame of {length} bytes")));
        }
        let mut payload = vec![0u8; length];
        reader.read_exact(&mut payload).await?;
        let word = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        if word & 0x8000_0000 == 0 {
            // A data frame.
            let id = word & 0x7fff_ffff;
            if let Some(stream) = open.get(&id) {
                if !payload.is_empty() && stream.send(Bytes::from(payload)).await.is_err() {
                    open.remove(&id);
                }
                if flags & FLAG_FIN != 0 {
                    open.remove(&id);
                }
            }
            continue;
        }
        let version = u16::from_be_bytes([head[0], head[1]]) & 0x7fff;
        let kind = u16::from_be_bytes([head[2], head[3]]);
        if version != VERSION {
            return Err(Error::Protocol(format!("SPDY version {version}")));
        }
        match kind {
            SYN_STREAM => {
                if payload.len() < 10 {
                    return Err(Error::Protocol("short SYN_STREAM".into()));
                }
                let id = be32(&payload[0..4]) & 0x7fff_ffff;
                let stream_headers = headers.decode(&payload[10..])?;
                let (data_tx, data_rx) = mpsc::channel(32);
                if flags & FLAG_FIN == 0 {
                    open.insert(id, data_tx);
                }
                if tx.send(Outgoing::SynReply(id)).await.is_err() {
                    return Ok(());
                }
                let stream = Stream { headers: stream_headers, data: data_rx, writer: StreamWriter { id, tx: tx.clone() } };
                if streams.send(stream).is_err() {
                    return Ok(());
                }
            }
            // Decoded only to keep the header stream's state in step.
            SYN_REPLY | HEADERS if payload.len() >= 4 => {
                headers.decode(&payload[4..])?;
            }
            RST_STREAM if payload.len() >= 4 => {
                open.remove(&(be32(&payload[0..4]) & 0x7fff_ffff));
            }
            // Echoed; a send that fails means the connection is going.
            PING if payload.len() >= 4 && tx.send(Outgoing::Ping(be32(&payload[0..4]))).await.is_err() => return Ok(()),
            GOAWAY => return Ok(()),
            // SETTINGS, WINDOW_UPDATE and anything newer: nothing to do.
            _ => {}
        }
    }
}

async fn write_frames<W: AsyncWrite + Unpin>(mut writer: W, mut rx: mpsc::Receiver<Outgoing>) -> io::Result<()> {
    let mut headers = HeaderEncoder::new();
    let mut buf = BytesMut::new();
    while let Some(frame) = rx.recv().await {
        buf.clear();
        match frame {
            Outgoing::SynReply(id) => {
                let block = headers.encode(&[])?;
                control_head(&mut buf, SYN_REPLY, 0, 4 + block.len());
                buf.put_u32(id);
                buf.put_slice(&block);
            }
            Outgoing::Data { id, data, fin } => {
                buf.put_u32(id & 0x7fff_ffff);
                buf.put_u8(if fin { FLAG_FIN } else { 0 });
                put_u24(&mut buf, data.len());
                buf.put_slice(&data);
            }
            Outgoing::Ping(id) => {
                control_head(&mut buf, PING, 0, 4);
                buf.put_u32(id);
            }
        }
        writer.write_all(&buf).await?;
        if rx.is_empty() {
            writer.flush().await?;
        }
    }
    let _ = writer.shutdown().await;
    Ok(())
}

fn control_head(buf: &mut BytesMut, kind: u16, flags: u8, length: usize) {
    buf.put_u16(0x8000 | VERSION);
    buf.put_u16(kind);
    buf.put_u8(flags);
    put_u24(buf, length);
}

fn put_u24(buf: &mut BytesMut, n: usize) {
    let n = u32::try_from(n).expect("frames are smaller than 16 MiB");
    buf.put_slice(&n.to_be_bytes()[1..]);
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

// === header blocks ===

/// SPDY/3's zlib dictionary (draft-mbelshe-httpbis-spdy-00, 2.6.10.1): length-prefixed common
/// header names and values, then a run of common status codes, dates and media types.
fn dictionary() -> &'static [u8] {
    static DICTIONARY: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    DICTIONARY.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TAIL: &str = concat!(
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
            "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized",
            "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable",
            "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
            "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,",
            "publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
        );
        let mut dict = Vec::with_capacity(1424);
        for word in WORDS {
            dict.extend_from_slice(&u32::try_from(word.len()).expect("short").to_be_bytes());
            dict.extend_from_slice(word.as_bytes());
        }
        dict.extend_from_slice(TAIL.as_bytes());
        dict
    })
}

/// Reads the client's header blocks: one zlib stream across all of them.
struct HeaderDecoder(Decompress);

impl HeaderDecoder {
    fn new() -> HeaderDecoder {
        HeaderDecoder(Decompress::new(true))
    }

    fn decode(&mut self, block: &[u8]) -> Result<Vec<(String, String)>, Error> {
        let mut out = Vec::with_capacity(block.len() * 4 + 256);
        let mut input = block;
        loop {
            if out.len() == out.capacity() {
                out.reserve(4096);
            }
            let (before_in, before_out) = (self.0.total_in(), out.len());
            let result = self.0.decompress_vec(input, &mut out, FlushDecompress::Sync);
            let used = usize::try_from(self.0.total_in() - before_in).expect("fits");
            input = &input[used..];
            match result {
                Ok(_) if input.is_empty() && out.len() < out.capacity() => break,
                Ok(_) if used == 0 && out.len() == before_out => return Err(Error::Protocol("header block does not decompress".into())),
                Ok(_) => {}
                Err(e) => match e.needs_dictionary() {
                    Some(adler) => {
                        self.0.set_dictionary(dictionary()).map_err(|e| Error::Protocol(format!("header dictionary (adler32 {adler:#x}): {e}")))?;
                    }
                    None => return Err(Error::Protocol(format!("header block: {e}"))),
                },
            }
        }
        parse_header_block(&out)
    }
}

fn parse_header_block(raw: &[u8]) -> Result<Vec<(String, String)>, Error> {
    let short = || Error::Protocol("truncated header block".into());
    let mut rest = raw;
    let mut take = |n: usize| -> Result<&[u8], Error> {
        if rest.len() < n {
            return Err(short());
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let count = be32(take(4)?);
    let mut headers = Vec::new();
    for _ in 0..count {
        let len = be32(take(4)?) as usize;
        let name = String::from_utf8_lossy(take(len)?).into_owned();
        let len = be32(take(4)?) as usize;
        let value = String::from_utf8_lossy(take(len)?).into_owned();
        // Several values of one name are joined with NUL.
        for v in value.split('\0') {
            headers.push((name.clone(), v.to_owned()));
        }
    }
    Ok(headers)
}

/// Writes header blocks: one zlib stream across all of them, each block flushed.
struct HeaderEncoder(Compress);

impl HeaderEncoder {
    fn new() -> HeaderEncoder {
        let mut compress = Compress::new(Compression::default(), true);
        compress.set_dictionary(dictionary()).expect("a fresh compressor takes a dictionary");
        HeaderEncoder(compress)
    }

    fn encode(&mut self, headers: &[(&str, &str)]) -> io::Result<Vec<u8>> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&u32::try_from(headers.len()).expect("few").to_be_bytes());
        for (name, value) in headers {
            for s in [name, value] {
                raw.extend_from_slice(&u32::try_from(s.len()).expect("short").to_be_bytes());
                raw.extend_from_slice(s.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = &raw[..];
        loop {
            if out.len() == out.capacity() {
                out.reserve(256);
            }
            let before = self.0.total_in();
            self.0.compress_vec(input, &mut out, FlushCompress::Sync).map_err(io::Error::other)?;
            input = &input[usize::try_from(self.0.total_in() - before).expect("fits")..];
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_is_spdy3s() {
        let dict = dictionary();
        assert_eq!(dict.len(), 1423);
        assert!(dict.starts_with(b"\0\0\0\x07options\0\0\0\x04head"));
        assert!(dict.ends_with(b"utf-,*,enq=0."));
    }

    #[test]
    fn header_blocks_round_trip_across_one_stream() {
        let mut enc = HeaderEncoder::new();
        let mut dec = HeaderDecoder::new();
        for i in 0..3 {
            let port = format!("80{i}");
            let block = enc.encode(&[("streamtype", "data"), ("port", &port), ("requestid", "0")]).unwrap();
            let headers = dec.decode(&block).unwrap();
            assert_eq!(headers, [("streamtype".into(), "data".into()), ("port".into(), port), ("requestid".into(), "0".into())]);
        }
        assert!(dec.decode(&enc.encode(&[]).unwrap()).unwrap().is_empty());
    }

    #[tokio::test]
    async fn streams_are_replied_to_and_carry_data() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let (streams_tx, mut streams_rx) = mpsc::unbounded_channel();
        let session = tokio::spawn(serve(server, streams_tx));
        let (mut cr, mut cw) = tokio::io::split(client);
        let mut enc = HeaderEncoder::new();
        let block = enc.encode(&[("streamtype", "data"), ("port", "80")]).unwrap();
        let mut buf = BytesMut::new();
        control_head(&mut buf, SYN_STREAM, 0, 10 + block.len());
        buf.put_u32(1);
        buf.put_u32(0);
        buf.put_u16(0);
        buf.put_slice(&block);
        // Data with FIN, then a ping.
        buf.put_u32(1);
        buf.put_u8(FLAG_FIN);
        put_u24(&mut buf, 5);
        buf.put_slice(b"hello");
        control_head(&mut buf, PING, 0, 4);
        buf.put_u32(7);
        cw.write_all(&buf).await.unwrap();

        let mut stream = streams_rx.recv().await.unwrap();
        assert_eq!(stream.header("port"), Some("80"));
        assert_eq!(stream.data.recv().await.unwrap(), Bytes::from_static(b"hello"));
        assert!(stream.data.recv().await.is_none(), "FIN ends the stream's data");
        stream.writer.send(b"back").await.unwrap();
        stream.writer.finish().await.unwrap();

        // SYN_REPLY first, then the ping's echo and the data in the order they were queued.
        let mut head = [0u8; 8];
        cr.read_exact(&mut head).await.unwrap();
        assert_eq!(&head[..4], &[0x80, 0x03, 0x00, 0x02]);
        let mut reply = vec![0u8; usize::from(head[7])];
        cr.read_exact(&mut reply).await.unwrap();
        assert_eq!(be32(&reply), 1);
        let mut dec = HeaderDecoder::new();
        assert!(dec.decode(&reply[4..]).unwrap().is_empty());
        let mut seen_ping = false;
        let mut data = Vec::new();
        while !data.ends_with(b"|fin") {
            cr.read_exact(&mut head).await.unwrap();
            let mut payload = vec![0u8; usize::from(head[7])];
            cr.read_exact(&mut payload).await.unwrap();
            if head[0] & 0x80 != 0 {
                assert_eq!(u16::from_be_bytes([head[2], head[3]]), PING);
                assert_eq!(be32(&payload), 7);
                seen_ping = true;
            } else {
                data.extend_from_slice(&payload);
                if head[4] & FLAG_FIN != 0 {
                    data.extend_from_slice(b"|fin");
                }
            }
        }
        assert!(seen_ping);
        assert_eq!(data, b"back|fin");
        // The client hangs up: the session ends.
        drop((cw, cr, stream));
        session.await.unwrap().unwrap();
    }
}
