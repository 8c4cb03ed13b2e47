//! MCP over stdin/stdout: newline-delimited JSON-RPC, every line checked by
//! [`super::jsonrpc::check`] first. A line that fails gets its JSON-RPC
//! error on stdout (a notification with bad params gets none, as JSON-RPC
//! says), and reading goes on; rmcp's own stdio transport drops such a
//! line without a word, and a client waits for an answer that never comes.

use std::sync::Arc;

use rmcp::RoleServer;
use rmcp::model::ServerJsonRpcMessage;
use rmcp::service::RxJsonRpcMessage;
use rmcp::transport::Transport;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::Mutex;

use super::jsonrpc;

/// Longest line read (a message larger than this is refused and skipped).
pub const MAX_LINE: usize = 64 << 20;

/// The checked stdio transport (generic over the streams, for tests).
///
/// `receive` is cancel-safe: rmcp polls it in a `select!` beside its own
/// sends and drops it when another branch wins, so a line half read stays
/// in `line` for the next call, and error replies are written by a task of
/// their own rather than inside `receive`.
pub struct Checked<R, W> {
    reader: BufReader<R>,
    writer: Arc<Mutex<W>>,
    line: Vec<u8>,
    /// Discarding the rest of a line longer than [`MAX_LINE`].
    skipping: bool,
}

impl<R, W> std::fmt::Debug for Checked<R, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checked").finish_non_exhaustive()
    }
}

/// On the process's stdin and stdout.
pub fn stdio() -> Checked<tokio::io::Stdin, tokio::io::Stdout> {
    Checked::new(tokio::io::stdin(), tokio::io::stdout())
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Checked<R, W> {
    /// Reads messages from `reader`, writes them to `writer`.
    pub fn new(reader: R, writer: W) -> Checked<R, W> {
        Checked {
            reader: BufReader::new(reader),
            writer: Arc::new(Mutex::new(writer)),
            line: Vec::new(),
            skipping: false,
        }
    }
}

async fn write_line<W: AsyncWrite + Unpin>(
    w: &Mutex<W>,
    mut bytes: Vec<u8>,
) -> std::io::Result<()> {
    bytes.push(b'\n');
    let mut w = w.lock().await;
    w.write_all(&bytes).await?;
    w.flush().await
}

impl<R, W> Checked<R, W>
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    /// Answers a refused line from a task of its own, so that dropping
    /// `receive` cannot lose the answer.
    fn reply(&self, r: &jsonrpc::Rejection) {
        let writer = Arc::clone(&self.writer);
        let bytes = r.to_json();
        tokio::spawn(async move {
            let _ = write_line(&writer, bytes).await;
        });
    }
}

impl<R, W> Transport<RoleServer> for Checked<R, W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: ServerJsonRpcMessage,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let writer = Arc::clone(&self.writer);
        async move {
            let bytes = serde_json::to_vec(&item).map_err(std::io::Error::other)?;
            write_line(&writer, bytes).await
        }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        loop {
            // Appends to what a dropped call had read of this line.
            let room = (MAX_LINE + 1).saturating_sub(self.line.len()).max(1);
            let n = (&mut self.reader)
                .take(room as u64)
                .read_until(b'\n', &mut self.line)
                .await
                .ok()?;
            let ended = self.line.last() == Some(&b'\n');
            if self.skipping {
                self.line.clear();
                if ended {
                    self.skipping = false;
                } else if n == 0 {
                    return None;
                }
                continue;
            }
            if n == 0 && self.line.is_empty() {
                return None;
            }
            if !ended && n != 0 {
                if self.line.len() <= MAX_LINE {
                    continue;
                }
                // Longer than MAX_LINE: refuse it and skip to its end.
                self.line.clear();
                self.skipping = true;
                self.reply(&jsonrpc::Rejection {
                    id: None,
                    code: jsonrpc::INVALID_REQUEST,
                    message: format!("Invalid request: a message is longer than {MAX_LINE} bytes"),
                    notification: false,
                });
                continue;
            }
            let line = std::mem::take(&mut self.line);
            let text = line.trim_ascii();
            if text.is_empty() {
                if n == 0 {
                    return None;
                }
                continue;
            }
            match jsonrpc::check(text) {
                Ok(message) => return Some(message),
                Err(r) if r.notification => {}
                Err(r) => self.reply(&r),
            }
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.writer.lock().await.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_malformed_line_is_answered_and_reading_goes_on() {
        let input = b"{\n[1]\n{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/call\",\"params\":{\"name\":3}}\n\n{\"jsonrpc\":\"2.0\",\"method\":\"tools/call\",\"params\":{\"name\":3}}\n{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"ping\"}\n";
        let (client, server_out) = tokio::io::duplex(1 << 16);
        let mut t = Checked::new(&input[..], server_out);
        let got = Transport::<RoleServer>::receive(&mut t).await.unwrap();
        assert!(
            matches!(got, rmcp::model::JsonRpcMessage::Request(ref r) if r.id == rmcp::model::NumberOrString::Number(8)),
            "{got:?}"
        );
        assert!(Transport::<RoleServer>::receive(&mut t).await.is_none());
        // The replies are written by tasks of their own.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        drop(t);
        let mut out = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut { client }, &mut out)
            .await
            .unwrap();
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        // Three errors: the parse error, the batch, the bad params of
        // request 7; none for the notification.
        assert_eq!(lines.len(), 3, "{out}");
        assert_eq!(lines[0]["error"]["code"], jsonrpc::PARSE_ERROR);
        assert_eq!(lines[1]["error"]["code"], jsonrpc::INVALID_REQUEST);
        assert_eq!(lines[2]["error"]["code"], jsonrpc::INVALID_PARAMS);
        assert_eq!(lines[2]["id"], 7);
    }
}
