//! `GET /containerLogs/{ns}/{pod}/{container}`: a container's log file, whole, its last lines
//! (`tailLines`), at most `limitBytes`, the run before (`previous`), or followed as it grows
//! (`follow`) until the container's run ends, the pod is gone or the client goes.

use std::convert::Infallible;
use std::io::SeekFrom;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Response, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

use super::{Body, Query, status_response};
use crate::runtime::{ContainerHandle, PodRuntime};

/// How often a followed log is checked for growth.
const FOLLOW_POLL: Duration = Duration::from_millis(100);
const CHUNK: usize = 32 * 1024;

pub(super) async fn serve(runtime: Arc<dyn PodRuntime>, namespace: &str, pod: &str, handle: ContainerHandle, query: &Query) -> Response<Body> {
    let container = handle.container.clone();
    let previous = query.flag(&["previous"]);
    let follow = query.flag(&["follow"]) && !previous;
    let number = |key: &str| -> Result<Option<u64>, Box<Response<Body>>> {
        match query.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse::<u64>()
                .map(Some)
                .map_err(|_| Box::new(status_response(400, "BadRequest", &format!("{key}: Invalid value: {v:?}: must be a non-negative integer")))),
        }
    };
    let (tail_lines, limit_bytes) = match (number("tailLines"), number("limitBytes")) {
        (Ok(t), Ok(l)) => (t, l),
        (Err(resp), _) | (_, Err(resp)) => return *resp,
    };
    let path = if previous {
        match &handle.previous_log_path {
            Some(p) => p.clone(),
            None => return status_response(400, "BadRequest", &format!("previous terminated container {container:?} in pod {pod:?} not found")),
        }
    } else {
        handle.log_path.clone()
    };
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return status_response(400, "BadRequest", &format!("container {container:?} in pod {pod:?} is waiting to start: ContainerCreating"));
        }
        Err(e) => return status_response(500, "InternalError", &format!("reading the log of container {container:?}: {e}")),
    };
    let start = match tail_lines {
        Some(n) => match tail_offset(&mut file, n).await {
            Ok(offset) => offset,
            Err(e) => return status_response(500, "InternalError", &format!("reading the log of container {container:?}: {e}")),
        },
        None => 0,
    };

    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let follow = follow.then(|| Follow { runtime, namespace: namespace.to_owned(), pod: pod.to_owned(), container: container.clone(), path: path.clone() });
    tokio::spawn(async move {
        if let Err(e) = copy(file, start, limit_bytes, follow, &tx).await {
            tracing::debug!(error = %e, container, "log stream ended");
        }
    });
    let stream = tokio_stream_from(rx).map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let mut resp = Response::new(StreamBody::new(stream).boxed_unsync());
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

fn tokio_stream_from(mut rx: mpsc::Receiver<Bytes>) -> impl futures::Stream<Item = Bytes> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// What decides when a followed log ends.
pub(super) struct Follow {
    pub(super) runtime: Arc<dyn PodRuntime>,
    pub(super) namespace: String,
    pub(super) pod: String,
    pub(super) container: String,
    pub(super) path: PathBuf,
}

impl Follow {
    /// Whether the run that writes `path` may still write more.
    fn still_running(&self) -> bool {
        match self.runtime.container(&self.namespace, &self.pod, Some(&self.container)) {
            Ok(h) => h.pid.is_some() && h.log_path == self.path,
            Err(_) => false,
        }
    }
}

/// Sends the file from `start` to `tx`: at most `limit` bytes; with `follow`, waiting for more
/// until the run that writes it ends (then to its end) or the receiver goes.
pub(super) async fn copy(mut file: tokio::fs::File, start: u64, limit: Option<u64>, follow: Option<Follow>, tx: &mpsc::Sender<Bytes>) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(start)).await?;
    let mut offset = start;
    let mut left = limit.unwrap_or(u64::MAX);
    let mut buf = vec![0u8; CHUNK];
    // After the run has ended, one more read to the end, then stop.
    let mut last_pass = false;
    while left > 0 {
        let want = usize::try_from(left.min(CHUNK as u64)).unwrap_or(CHUNK);
        let n = file.read(&mut buf[..want]).await?;
        if n > 0 {
            offset += n as u64;
            left -= n as u64;
            if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                return Ok(());
            }
            continue;
        }
        let Some(follow) = &follow else { return Ok(()) };
        if last_pass {
            return Ok(());
        }
        if !follow.still_running() {
            last_pass = true;
            continue;
        }
        tokio::select! {
            _ = tx.closed() => return Ok(()),
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
        }
        // A log that shrank was truncated: start again from its beginning.
        if tokio::fs::metadata(&follow.path).await.map(|m| m.len() < offset).unwrap_or(false) {
            file.seek(SeekFrom::Start(0)).await?;
            offset = 0;
        }
    }
    Ok(())
}

/// The offset where the last `lines` lines of the file start (a last line without its newline
/// counts as a line, as the kubelet counts them).
async fn tail_offset(file: &mut tokio::fs::File, lines: u64) -> std::io::Result<u64> {
    let len = file.metadata().await?.len();
    if lines == 0 {
        return Ok(len);
    }
    let mut end = len;
    let mut newlines = 0u64;
    let mut buf = vec![0u8; CHUNK];
    // A trailing newline ends the last line; it does not start another.
    let mut skip_final_newline = true;
    while end > 0 {
        let start = end.saturating_sub(CHUNK as u64);
        let size = usize::try_from(end - start).expect("a chunk fits in memory");
        file.seek(SeekFrom::Start(start)).await?;
        file.read_exact(&mut buf[..size]).await?;
        for i in (0..size).rev() {
            if buf[i] != b'\n' {
                skip_final_newline = false;
                continue;
            }
            if skip_final_newline {
                skip_final_newline = false;
                continue;
            }
            newlines += 1;
            if newlines == lines {
                return Ok(start + i as u64 + 1);
            }
        }
        end = start;
    }
    Ok(0)
}

/// For tests: the bytes [`tail_offset`] would keep.
#[cfg(test)]
async fn tail(path: &std::path::Path, lines: u64) -> String {
    let mut f = tokio::fs::File::open(path).await.unwrap();
    let off = tail_offset(&mut f, lines).await.unwrap();
    let all = tokio::fs::read(path).await.unwrap();
    String::from_utf8(all[usize::try_from(off).unwrap()..].to_vec()).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tail_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        std::fs::write(&p, "a\nb\nc\n").unwrap();
        assert_eq!(tail(&p, 1).await, "c\n");
        assert_eq!(tail(&p, 2).await, "b\nc\n");
        assert_eq!(tail(&p, 3).await, "a\nb\nc\n");
        assert_eq!(tail(&p, 9).await, "a\nb\nc\n");
        assert_eq!(tail(&p, 0).await, "");
        std::fs::write(&p, "a\nb\nc").unwrap();
        assert_eq!(tail(&p, 1).await, "c");
        assert_eq!(tail(&p, 2).await, "b\nc");
        let long: String = (0..10_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&p, &long).unwrap();
        assert_eq!(tail(&p, 2).await, "line 9998\nline 9999\n");
    }
}
