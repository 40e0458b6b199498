//! The channel between the master process and a front process: a unix socket pair made by
//! the master, one JSON message per line.
//!
//! * front → master: [`ToMaster::Ready`] once it accepts connections (with the Python it
//!   runs, for the banner); [`ToMaster::Status`] when a client asks its `--status-addr`
//!   endpoint (the daemon groups' state lives in the master, which never serves clients).
//! * master → front: [`ToFront::Status`], the answer.
//!
//! When the master goes away the front reads the end of the stream and stops, so a front
//! never outlives its master.

use std::io;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Mutex, oneshot};

/// What a front process tells its master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ToMaster {
    /// The front accepts connections.
    Ready {
        /// The embedded Python's version (`3.11.2`), or the one this build embeds when the
        /// front runs no Python (every mount in a daemon process group).
        python: String,
        /// Embedded worker threads (None: no embedded Python).
        threads: Option<usize>,
    },
    /// A status request, in `text`, `json` or `prometheus`.
    Status {
        /// The format.
        format: String,
    },
}

/// What the master answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ToFront {
    /// The status, rendered.
    Status {
        /// The text.
        body: String,
    },
}

/// Writes one message as a line.
pub async fn send<T: Serialize>(out: &mut OwnedWriteHalf, message: &T) -> io::Result<()> {
    let mut line = serde_json::to_vec(message).map_err(io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line).await
}

/// The longest message line read (a status page is far shorter).
pub const MAX_LINE: usize = 4 << 20;

/// Reads one message; None at the end of the stream. A line longer than [`MAX_LINE`] or one
/// that is not a message is an `InvalidData` error after which the channel can be read on
/// (the rest of a long line is skipped, a piece at a time): the master never holds more than
/// one bounded line of what a front process sends.
pub async fn receive<T: for<'de> Deserialize<'de>>(
    input: &mut BufReader<OwnedReadHalf>,
) -> io::Result<Option<T>> {
    let mut line = Vec::new();
    let n = (&mut *input)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') && line.len() >= MAX_LINE {
        // Skip the rest of the line without keeping it.
        let mut rest = Vec::new();
        loop {
            rest.clear();
            let n = (&mut *input)
                .take(64 * 1024)
                .read_until(b'\n', &mut rest)
                .await?;
            if n == 0 || rest.last() == Some(&b'\n') {
                break;
            }
        }
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a control message longer than {MAX_LINE} bytes"),
        ));
    }
    serde_json::from_slice(&line)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The front's end of the channel.
pub struct FrontControl {
    out: Mutex<OwnedWriteHalf>,
    /// The status request waiting for its answer (one at a time).
    pending: Mutex<Option<oneshot::Sender<String>>>,
    /// Serialises status requests.
    asking: Mutex<()>,
}

impl FrontControl {
    /// Takes the front's end of the pair; returns it and the reader to pass to
    /// [`FrontControl::read_until_closed`].
    pub fn new(stream: UnixStream) -> (FrontControl, BufReader<OwnedReadHalf>) {
        let (input, out) = stream.into_split();
        (
            FrontControl {
                out: Mutex::new(out),
                pending: Mutex::new(None),
                asking: Mutex::new(()),
            },
            BufReader::new(input),
        )
    }

    /// Tells the master the front is ready.
    pub async fn ready(&self, python: String, threads: Option<usize>) -> io::Result<()> {
        send(
            &mut *self.out.lock().await,
            &ToMaster::Ready { python, threads },
        )
        .await
    }

    /// Asks the master for the daemon groups' status in `format`.
    pub async fn status(&self, format: &str) -> io::Result<String> {
        let _one_at_a_time = self.asking.lock().await;
        let (tx, rx) = oneshot::channel();
        *self.pending.lock().await = Some(tx);
        send(
            &mut *self.out.lock().await,
            &ToMaster::Status {
                format: format.to_string(),
            },
        )
        .await?;
        rx.await
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the master process is gone"))
    }

    /// Reads the master's messages until the channel closes (the master is gone, or stopping
    /// this front), handing answers to whoever asked.
    pub async fn read_until_closed(&self, mut input: BufReader<OwnedReadHalf>) {
        loop {
            match receive::<ToFront>(&mut input).await {
                Ok(Some(ToFront::Status { body })) => {
                    if let Some(tx) = self.pending.lock().await.take() {
                        let _ = tx.send(body);
                    }
                }
                Ok(None) => return,
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    tracing::warn!("ignored a message from the master process: {e}");
                }
                Err(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn status_requests_are_answered_in_turn() {
        let (front, master) = UnixStream::pair().unwrap();
        let (control, input) = FrontControl::new(front);
        let control = std::sync::Arc::new(control);
        let reader = {
            let control = control.clone();
            tokio::spawn(async move { control.read_until_closed(input).await })
        };
        let (master_in, mut master_out) = master.into_split();
        let mut master_in = BufReader::new(master_in);
        control.ready("3.11.2".into(), Some(5)).await.unwrap();
        assert_eq!(
            receive::<ToMaster>(&mut master_in).await.unwrap(),
            Some(ToMaster::Ready {
                python: "3.11.2".into(),
                threads: Some(5)
            })
        );
        let asking = {
            let control = control.clone();
            tokio::spawn(async move { control.status("json").await })
        };
        let request = receive::<ToMaster>(&mut master_in).await.unwrap().unwrap();
        assert_eq!(
            request,
            ToMaster::Status {
                format: "json".into()
            }
        );
        send(&mut master_out, &ToFront::Status { body: "[]".into() })
            .await
            .unwrap();
        assert_eq!(asking.await.unwrap().unwrap(), "[]");
        drop(master_out);
        drop(master_in);
        tokio::time::timeout(std::time::Duration::from_secs(5), reader)
            .await
            .unwrap()
            .unwrap();
    }
}
