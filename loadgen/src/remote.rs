//! Driving a running `toolplane serve` over its REST call path
//! (`--target http://HOST:PORT`): a fixed number of keep-alive HTTP/1.1
//! connections (the profile's `connections`), each with one request
//! outstanding, fed from one queue. The schedule stays open loop: an event
//! whose send time has come waits in the queue for a free connection, and
//! the corrected latency (from the intended send time) charges that wait,
//! as wrk2 does; the uncorrected latency starts when a connection sends it.
//!
//! The server's own figures come from its `/metrics`: resident memory every
//! second, and its engine's accepted events and outcomes before and after
//! the run, so the report can check the server's books too.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper_util::rt::TokioIo;
use toolplane_core::{
    Completion, Event, Outcome, OutcomeKind, RejectReason, Timestamps, ToolId, ToolTable,
};

use crate::error::TargetError;

/// Events queued for a free connection at most; past it a send is
/// refused as `full` (the server is not answering).
const QUEUE: usize = 1 << 20;

/// What the server answered, for the driver.
#[derive(Debug)]
pub enum Answer {
    /// A completed call (any status but 429).
    Done(Completion),
    /// 429: the server's engine refused it.
    Refused {
        /// The event's tag (its intended send time).
        tag: u64,
        /// Its tool.
        tool: ToolId,
        /// The limit the server named.
        reason: RejectReason,
    },
}

/// A running server.
pub struct Remote {
    rt: tokio::runtime::Runtime,
    authority: String,
    auth: Option<HeaderValue>,
    /// The tools it serves (from `GET /v1/tools`).
    pub tools: Vec<String>,
    table: Arc<ToolTable>,
    clock: quanta::Clock,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("authority", &self.authority)
            .field("tools", &self.tools)
            .finish_non_exhaustive()
    }
}

/// The server's counters at one moment (from `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scrape {
    /// `toolplane_events_accepted_total`.
    pub accepted: u64,
    /// `toolplane_events_total` by outcome index.
    pub outcomes: [u64; OutcomeKind::ALL.len()],
    /// `process_resident_memory_bytes`.
    pub rss_bytes: Option<u64>,
}

impl Remote {
    /// Connects to `url` (`http://HOST:PORT`), with a bearer `token` if
    /// given, and reads the tool list.
    ///
    /// # Errors
    ///
    /// The URL is not `http://HOST:PORT`, or the server cannot be reached
    /// or does not list its tools.
    pub fn connect(url: &str, token: Option<&str>) -> Result<Remote, TargetError> {
        let bad = |why: &str| TargetError::Remote {
            url: url.to_string(),
            source: why.into(),
        };
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("accepted http://HOST:PORT (https is not supported)"))?;
        let authority = rest.trim_end_matches('/').to_string();
        if authority.is_empty() || authority.contains('/') {
            return Err(bad("accepted http://HOST:PORT, without a path"));
        }
        let auth = match token {
            Some(t) => Some(
                HeaderValue::from_str(&format!("Bearer {t}"))
                    .map_err(|_| bad("the token is not a valid header value"))?,
            ),
            None => None,
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("loadgen-http")
            .enable_all()
            .build()
            .map_err(|e| bad(&format!("starting the HTTP runtime: {e}")))?;
        let (status, body) = rt
            .block_on(get(&authority, auth.as_ref(), "/v1/tools"))
            .map_err(|e| TargetError::Remote {
                url: url.to_string(),
                source: Box::new(e),
            })?;
        if status != 200 {
            return Err(bad(&format!(
                "GET /v1/tools answered {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        let list: Vec<serde_json::Value> = serde_json::from_slice(&body)
            .map_err(|e| bad(&format!("GET /v1/tools is not a JSON list: {e}")))?;
        let tools: Vec<String> = list
            .iter()
            .filter_map(|t| t["name"].as_str().map(str::to_owned))
            .collect();
        let table = Arc::new(ToolTable::default());
        for t in &tools {
            table.intern(t);
        }
        Ok(Remote {
            rt,
            authority,
            auth,
            tools,
            table,
            clock: quanta::Clock::new(),
        })
    }

    /// `HOST:PORT`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The id of a tool, for events.
    pub fn tool(&self, name: &str) -> ToolId {
        self.table.intern(name)
    }

    /// Names by id.
    pub fn table(&self) -> &Arc<ToolTable> {
        &self.table
    }

    /// The clock the client timestamps with.
    pub fn clock(&self) -> &quanta::Clock {
        &self.clock
    }

    /// Reads the server's counters and memory; `None` when `/metrics`
    /// does not answer.
    pub fn scrape(&self) -> Option<Scrape> {
        let (status, body) = self
            .rt
            .block_on(get(&self.authority, self.auth.as_ref(), "/metrics"))
            .ok()?;
        (status == 200).then(|| parse_metrics(&String::from_utf8_lossy(&body)))
    }

    /// Opens `connections` connections and returns the client that feeds
    /// them.
    pub fn client(&self, connections: usize) -> Client {
        let (jobs_tx, jobs_rx) = flume::bounded::<Event>(QUEUE);
        let (answers_tx, answers_rx) = flume::unbounded();
        let paths: Arc<Vec<String>> = Arc::new(
            (0..self.table.len() as u32)
                .map(|i| {
                    let name = self.table.name(ToolId(i)).unwrap_or_default();
                    format!("/v1/tools/{name}/call")
                })
                .collect(),
        );
        for i in 0..connections {
            let conn = Connection {
                index: u16::try_from(i).unwrap_or(u16::MAX),
                authority: self.authority.clone(),
                auth: self.auth.clone(),
                paths: Arc::clone(&paths),
                clock: self.clock.clone(),
            };
            self.rt.spawn(conn.run(jobs_rx.clone(), answers_tx.clone()));
        }
        Client {
            jobs: jobs_tx,
            answers: answers_rx,
        }
    }
}

/// Feeds the connections.
#[derive(Debug)]
pub struct Client {
    jobs: flume::Sender<Event>,
    answers: flume::Receiver<Answer>,
}

impl Client {
    /// Queues an event for the next free connection.
    ///
    /// # Errors
    ///
    /// `Full` when the queue is full (the server stopped answering).
    pub fn submit(&mut self, event: Event) -> Result<(), RejectReason> {
        self.jobs.try_send(event).map_err(|_| RejectReason::Full)
    }

    /// Hands every answer received so far to `f`; how many.
    pub fn drain(&mut self, f: &mut dyn FnMut(Answer)) -> usize {
        let mut n = 0;
        while let Ok(a) = self.answers.try_recv() {
            f(a);
            n += 1;
        }
        n
    }
}

struct Connection {
    index: u16,
    authority: String,
    auth: Option<HeaderValue>,
    paths: Arc<Vec<String>>,
    clock: quanta::Clock,
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

impl Connection {
    async fn run(self, jobs: flume::Receiver<Event>, answers: flume::Sender<Answer>) {
        let mut sender: Option<Sender> = None;
        while let Ok(mut event) = jobs.recv_async().await {
            let tag = event.tag();
            let tool = event.tool();
            let key = event.key();
            let submitted = self.clock.raw();
            let result = self.send(&mut sender, &mut event).await;
            let finished = self.clock.raw();
            let outcome = match result {
                Ok((429, body)) => {
                    let reason = reject_reason(&body);
                    if answers.send(Answer::Refused { tag, tool, reason }).is_err() {
                        return;
                    }
                    continue;
                }
                Ok((status, body)) => outcome(status, &body),
                Err(e) => {
                    sender = None;
                    Outcome::Error(e.to_string().into())
                }
            };
            let answer = Answer::Done(Completion {
                tag,
                tool,
                key,
                worker: self.index,
                outcome,
                times: Timestamps {
                    submitted,
                    started: submitted,
                    finished,
                },
            });
            if answers.send(answer).is_err() {
                return;
            }
        }
    }

    async fn send(
        &self,
        sender: &mut Option<Sender>,
        event: &mut Event,
    ) -> Result<(u16, Bytes), HttpError> {
        if sender.as_ref().is_none_or(|s| s.is_closed()) {
            *sender = Some(open(&self.authority).await?);
        }
        let s = sender.as_mut().expect("connected above");
        s.ready().await.map_err(HttpError::Connection)?;
        let path = self
            .paths
            .get(event.tool().0 as usize)
            .ok_or(HttpError::NoTool(event.tool().0))?;
        let mut req = Request::post(path.as_str())
            .header(HOST, self.authority.as_str())
            .header(CONTENT_TYPE, "application/json");
        if let Some(k) = event.key() {
            req = req.header("x-toolplane-key", k);
        }
        if event.priority() == toolplane_core::Priority::Low {
            req = req.header("x-toolplane-priority", "low");
        }
        if let Some(a) = &self.auth {
            req = req.header(AUTHORIZATION, a.clone());
        }
        // A spilled payload hands its buffer over; an inline one is copied.
        let body = Bytes::from(event.take_payload().into_vec());
        exchange(s, req.body(Full::new(body))).await
    }
}

impl Remote {
    /// Writes `files` into the server's data directory with its own
    /// `fs.write` tool, so that a profile's `fs.read` events find them (as
    /// the embedded target writes them into its temporary data directory).
    ///
    /// # Errors
    ///
    /// The server has no `fs.write`, or a write is not answered 200.
    pub fn seed(&self, files: &[crate::workload::DataFile]) -> Result<(), TargetError> {
        if files.is_empty() {
            return Ok(());
        }
        let fail = |why: String| TargetError::Seed(why.into());
        let lost = |e: HttpError| TargetError::Seed(Box::new(e));
        if !self.tools.iter().any(|t| t == "fs.write") {
            return Err(fail(
                "the profile reads files, and the server has no fs.write tool to write them with"
                    .into(),
            ));
        }
        self.rt.block_on(async {
            let mut sender = open(&self.authority).await.map_err(lost)?;
            for f in files {
                let content = String::from_utf8(crate::workload::data_file_contents(f.size))
                    .map_err(|e| fail(format!("{}: {e}", f.path)))?;
                let body = serde_json::json!({
                    "path": f.path,
                    "content": content,
                    "create_dirs": true,
                })
                .to_string();
                let mut req = Request::post("/v1/tools/fs.write/call")
                    .header(HOST, self.authority.as_str())
                    .header(CONTENT_TYPE, "application/json");
                if let Some(a) = &self.auth {
                    req = req.header(AUTHORIZATION, a.clone());
                }
                sender
                    .ready()
                    .await
                    .map_err(|e| lost(HttpError::Connection(e)))?;
                let (status, answer) =
                    exchange(&mut sender, req.body(Full::new(Bytes::from(body))))
                        .await
                        .map_err(lost)?;
                if status != 200 {
                    return Err(fail(format!(
                        "fs.write {} answered {status}: {}",
                        f.path,
                        String::from_utf8_lossy(&answer)
                    )));
                }
            }
            Ok(())
        })
    }
}

/// Why an HTTP exchange with the server failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// No TCP connection.
    #[error("connecting to {authority}: {source}")]
    Connect {
        /// `HOST:PORT`.
        authority: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP/1.1 handshake failed.
    #[error("HTTP handshake with {authority}: {source}")]
    Handshake {
        /// `HOST:PORT`.
        authority: String,
        /// Why.
        #[source]
        source: hyper::Error,
    },
    /// The connection failed before the request went out.
    #[error("connection: {0}")]
    Connection(#[source] hyper::Error),
    /// The request could not be built.
    #[error("building the request: {0}")]
    Build(#[source] hyper::http::Error),
    /// The request or its answer's head failed.
    #[error("request: {0}")]
    Request(#[source] hyper::Error),
    /// The answer's body failed.
    #[error("reading the answer: {0}")]
    Read(#[source] hyper::Error),
    /// An event named a tool the server did not list.
    #[error("no tool with id {0}")]
    NoTool(u32),
    /// A GET failed.
    #[error("GET {path}: {source}")]
    Get {
        /// The path.
        path: &'static str,
        /// Why.
        #[source]
        source: Box<HttpError>,
    },
}

/// Sends one request and reads the whole answer: its status and body.
async fn exchange(
    sender: &mut Sender,
    req: Result<Request<Full<Bytes>>, hyper::http::Error>,
) -> Result<(u16, Bytes), HttpError> {
    let req = req.map_err(HttpError::Build)?;
    let resp = sender.send_request(req).await.map_err(HttpError::Request)?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(HttpError::Read)?
        .to_bytes();
    Ok((status, body))
}

/// A keep-alive HTTP/1.1 connection to `authority`.
async fn open(authority: &str) -> Result<Sender, HttpError> {
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|source| HttpError::Connect {
            authority: authority.to_string(),
            source,
        })?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|source| HttpError::Handshake {
            authority: authority.to_string(),
            source,
        })?;
    tokio::spawn(conn);
    Ok(sender)
}

/// The `kind` of the server's error body (`{"error":{"kind":"shed"}}`).
fn error_kind(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v["error"]["kind"].as_str().map(str::to_owned)
}

/// The engine limit a 429 names.
fn reject_reason(body: &[u8]) -> RejectReason {
    let kind = error_kind(body).unwrap_or_default();
    RejectReason::ALL
        .into_iter()
        .find(|r| r.as_str() == kind)
        .unwrap_or(RejectReason::Full)
}

/// The outcome a status stands for.
fn outcome(status: u16, body: &[u8]) -> Outcome {
    let message = || -> std::borrow::Cow<'static, str> {
        let v: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        let m = v
            .as_ref()
            .and_then(|v| v["error"]["message"].as_str())
            .map_or_else(|| String::from_utf8_lossy(body).into_owned(), str::to_owned);
        format!("HTTP {status}: {m}").into()
    };
    match status {
        200 => Outcome::Ok(toolplane_core::Payload::new()),
        504 => Outcome::Timeout,
        503 if error_kind(body).as_deref() == Some("cancelled") => Outcome::Cancelled,
        _ => Outcome::Error(message()),
    }
}

/// One GET on a fresh connection.
async fn get(
    authority: &str,
    auth: Option<&HeaderValue>,
    path: &'static str,
) -> Result<(u16, Bytes), HttpError> {
    let get = |e: HttpError| HttpError::Get {
        path,
        source: Box::new(e),
    };
    let mut sender = open(authority).await.map_err(get)?;
    let mut req = Request::get(path).header(HOST, authority);
    if let Some(a) = auth {
        req = req.header(AUTHORIZATION, a.clone());
    }
    exchange(&mut sender, req.body(Full::new(Bytes::new())))
        .await
        .map_err(get)
}

/// The counters loadgen reads from the server's Prometheus text.
pub fn parse_metrics(text: &str) -> Scrape {
    let mut s = Scrape::default();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        if name == "toolplane_events_accepted_total" {
            s.accepted = v as u64;
        } else if name == "process_resident_memory_bytes" {
            s.rss_bytes = Some(v as u64);
        } else if let Some(rest) = name.strip_prefix("toolplane_events_total{outcome=\"") {
            let kind = rest.trim_end_matches("\"}");
            if let Some(k) = OutcomeKind::ALL.iter().find(|k| k.as_str() == kind) {
                s.outcomes[*k as usize] = v as u64;
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_servers_counters() {
        let s = parse_metrics(
            "# HELP x\ntoolplane_events_accepted_total 12\n\
             toolplane_events_total{outcome=\"ok\"} 10\n\
             toolplane_events_total{outcome=\"timeout\"} 2\n\
             process_resident_memory_bytes 4096\n",
        );
        assert_eq!(s.accepted, 12);
        assert_eq!(s.outcomes[OutcomeKind::Ok as usize], 10);
        assert_eq!(s.outcomes[OutcomeKind::Timeout as usize], 2);
        assert_eq!(s.rss_bytes, Some(4096));
    }

    #[test]
    fn statuses_map_to_outcomes_and_reasons() {
        assert_eq!(outcome(200, b"{}").kind(), OutcomeKind::Ok);
        assert_eq!(outcome(504, b"").kind(), OutcomeKind::Timeout);
        assert_eq!(
            outcome(503, br#"{"error":{"kind":"cancelled"}}"#).kind(),
            OutcomeKind::Cancelled
        );
        let e = outcome(422, br#"{"error":{"kind":"error","message":"bad path"}}"#);
        assert_eq!(e, Outcome::Error("HTTP 422: bad path".into()));
        assert_eq!(
            reject_reason(br#"{"error":{"kind":"shed"}}"#),
            RejectReason::Shed
        );
        assert_eq!(
            reject_reason(br#"{"error":{"kind":"inflight_limit"}}"#),
            RejectReason::InflightLimit
        );
        assert_eq!(reject_reason(b"?"), RejectReason::Full);
        // A 503 while the server drains is an error, not a cancellation,
        // even when its message says "cancelled".
        let draining = br#"{"error":{"kind":"shutting_down","message":"not cancelled"}}"#;
        assert_eq!(outcome(503, draining).kind(), OutcomeKind::Error);
    }
}
