//! The NATS JetStream work queue: ingest nodes publish a job's chunks to
//! one stream, and every `wasmpipe worker` pulls from one durable consumer,
//! so JetStream hands each chunk to one worker at a time and hands it to
//! another when its worker goes silent for `ack_wait`.
//!
//! A message is one chunk: its events as NDJSON in the payload, and in its
//! headers the job and the chunk's event range. The message id (JetStream
//! de-duplicates by it) is that range, so a publish retried after a lost
//! acknowledgement is stored once.

use crate::exec::ChunkId;
use crate::exec::chunk::cut_by_bytes;
use crate::manifest::QueueSection;
use crate::manifest::redact;
use anyhow::{Context as _, Result, anyhow, bail};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use std::time::Duration;

const JOB: &str = "Wasmpipe-Job";
const FIRST: &str = "Wasmpipe-First";
const EVENTS: &str = "Wasmpipe-Events";
const SEQ: &str = "Wasmpipe-Seq";
/// The durable consumer all workers of a pipeline share.
const CONSUMER: &str = "workers";

/// A pipeline's chunk stream.
#[derive(Clone)]
pub struct ChunkQueue {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: String,
    subject: String,
    ack_wait: Duration,
}

/// Why a publish failed.
#[derive(Debug)]
pub enum PublishFailure {
    /// The stream is at its `max_bytes`: try again later.
    Full,
    /// One event is larger than a NATS message may be.
    TooLarge {
        /// Its index in the job.
        event: u64,
        /// Its size.
        size: usize,
        /// The most a message may carry.
        limit: usize,
    },
    /// NATS is unreachable or did not answer.
    Unavailable(anyhow::Error),
}

/// Room left in a message for its headers.
const HEADER_ROOM: usize = 512;

impl ChunkQueue {
    /// Connects to NATS and creates the stream if it does not exist.
    /// `resolve` makes the manifest's file names (`tls_ca` and so on)
    /// paths.
    pub async fn connect(
        q: &QueueSection,
        pipeline: &str,
        resolve: impl Fn(&str) -> std::path::PathBuf,
    ) -> Result<ChunkQueue> {
        let url = q.nats_url();
        let mut options = async_nats::ConnectOptions::new();
        if let Some(ca) = &q.tls_ca {
            let ca = resolve(ca);
            // Read here, so a wrong file is named now rather than being a
            // connection that is retried for ever.
            crate::tls::read_roots(&ca).context("`[queue] tls_ca`")?;
            options = options.add_root_certificates(ca).require_tls(true);
        } else if url.starts_with("tls://") {
            options = options.require_tls(true);
        }
        match (&q.tls_cert, &q.tls_key) {
            (Some(cert), Some(key)) => {
                let (cert, key) = (resolve(cert), resolve(key));
                crate::tls::read_certs(&cert).context("`[queue] tls_cert`")?;
                crate::tls::read_key(&key).context("`[queue] tls_key`")?;
                options = options.add_client_certificate(cert, key);
            }
            (None, None) => {}
            _ => bail!(
                "`[queue]` needs both `tls_cert` and `tls_key` (a client certificate and its key), or neither"
            ),
        }
        let client = options
            .name(format!("wasmpipe {pipeline}"))
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .connect(&url)
            .await
            .with_context(|| {
                format!(
                    "cannot connect to NATS at {}; hint: is nats-server running with JetStream (`nats-server -js`)?",
                    redact(&url)
                )
            })?;
        let js = jetstream::new(client.clone());
        let name = q.stream_name(pipeline);
        let subject = format!("wasmpipe.{name}.chunks");
        js.get_or_create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            max_bytes: q.max_bytes.0.min(i64::MAX as u64) as i64,
            discard: stream::DiscardPolicy::New,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(|e| {
            // The client connects in the background (and keeps trying), so
            // an unreachable server, or one whose certificate is refused,
            // first shows here, as a request that timed out.
            if client.connection_state() != async_nats::connection::State::Connected {
                anyhow!(
                    "cannot connect to NATS at {}: no connection yet ({e}); hint: is nats-server running there? For TLS, is `[queue] tls_ca` the CA that signed its certificate?",
                    redact(&url)
                )
            } else {
                anyhow!("cannot create the JetStream stream `{name}`: {e}; hint: nats-server needs JetStream enabled (`-js`) and room for the stream's `[queue] max_bytes` in its JetStream storage limits")
            }
        })?;
        Ok(ChunkQueue {
            client,
            js,
            stream: name,
            subject,
            ack_wait: q.ack_wait.0,
        })
    }

    /// Publishes a job's chunks and waits until JetStream has stored every
    /// one. `chunks` are NDJSON data and event counts, chunk 0 first. A
    /// chunk larger than a NATS message may be is cut into pieces first
    /// (each keeps its chunk's number); nothing is sent if one event alone
    /// is too large.
    pub async fn publish_job(
        &self,
        job: i64,
        chunks: &[(Vec<u8>, u64)],
    ) -> Result<(), PublishFailure> {
        let limit = self.max_message();
        let mut pieces = Vec::with_capacity(chunks.len());
        let mut first = 0;
        for (seq, (data, events)) in chunks.iter().enumerate() {
            let id = ChunkId {
                job,
                seq: seq as u64,
                first_index: first,
                events: *events,
            };
            if data.len() <= limit {
                pieces.push((id, &data[..]));
            } else {
                let cut = cut_by_bytes(data, limit).map_err(|e| PublishFailure::TooLarge {
                    event: first + e.offset,
                    size: e.size,
                    limit,
                })?;
                pieces.extend(cut.iter().map(|p| (id.piece(p), p.data)));
            }
            first += events;
        }
        let mut acks = Vec::with_capacity(pieces.len());
        for (id, data) in pieces {
            acks.push(self.send(id, Bytes::copy_from_slice(data)).await?);
        }
        for ack in acks {
            ack.await.map_err(classify)?;
        }
        Ok(())
    }

    /// The largest chunk a message carries: the server's `max_payload`
    /// less room for headers.
    fn max_message(&self) -> usize {
        (self.client.server_info().max_payload)
            .saturating_sub(HEADER_ROOM)
            .max(1)
    }

    /// Whether the connection to NATS is up.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Publishes one chunk and waits for JetStream to store it.
    pub async fn publish(&self, range: ChunkId, data: Bytes) -> Result<(), PublishFailure> {
        self.send(range, data).await?.await.map_err(classify)?;
        Ok(())
    }

    async fn send(
        &self,
        range: ChunkId,
        data: Bytes,
    ) -> Result<jetstream::context::PublishAckFuture, PublishFailure> {
        let mut headers = HeaderMap::new();
        headers.insert(JOB, range.job.to_string().as_str());
        headers.insert(FIRST, range.first_index.to_string().as_str());
        headers.insert(EVENTS, range.events.to_string().as_str());
        headers.insert(SEQ, range.seq.to_string().as_str());
        let id = format!("{}:{}:{}", range.job, range.first_index, range.events);
        self.js
            .send_publish(
                self.subject.clone(),
                jetstream::message::PublishMessage::build()
                    .payload(data)
                    .headers(headers)
                    .message_id(id),
            )
            .await
            .map_err(classify)
    }

    /// The durable consumer every worker pulls from.
    pub async fn consumer(&self) -> Result<consumer::PullConsumer> {
        let stream = self
            .js
            .get_stream(&self.stream)
            .await
            .map_err(|e| anyhow!("cannot open the JetStream stream `{}`: {e}", self.stream))?;
        stream
            .get_or_create_consumer(
                CONSUMER,
                consumer::pull::Config {
                    durable_name: Some(CONSUMER.into()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: self.ack_wait,
                    // Deliveries are counted, and poison chunks split, by
                    // the workers: a chunk is never dropped by the server.
                    max_deliver: -1,
                    max_ack_pending: 10_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| {
                anyhow!(
                    "cannot create the JetStream consumer `{CONSUMER}` on `{}`: {e}",
                    self.stream
                )
            })
    }

    /// Messages in the stream (chunks not yet done), for `/metrics`.
    pub async fn depth(&self) -> Result<u64> {
        let stream = self
            .js
            .get_stream(&self.stream)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        Ok(stream.cached_info().state.messages)
    }
}

fn classify(e: jetstream::context::PublishError) -> PublishFailure {
    // The server refuses a message past the stream's limits with an API
    // error whose text says which limit ("maximum bytes exceeded").
    let text = e.to_string();
    if text.contains("maximum") && text.contains("exceeded") {
        PublishFailure::Full
    } else {
        PublishFailure::Unavailable(anyhow!("cannot publish to JetStream: {text}"))
    }
}

impl std::fmt::Display for PublishFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishFailure::Full => write!(f, "the JetStream stream is full"),
            PublishFailure::TooLarge { event, size, limit } => {
                write!(
                    f,
                    "event {event} is {size} bytes, more than a NATS message's {limit}"
                )
            }
            PublishFailure::Unavailable(e) => write!(f, "{e:#}"),
        }
    }
}

/// The chunk a message carries. A message without a `Wasmpipe-Seq`
/// header (published by an ingest node older than the header) gets its
/// number from its first event and `chunk_size`, as such nodes cut.
pub fn chunk_of(msg: &jetstream::Message, chunk_size: usize) -> Result<ChunkId> {
    let headers = msg
        .headers
        .as_ref()
        .ok_or_else(|| anyhow!("the message has no headers"))?;
    let get = |name: &str| -> Result<i64> {
        let v = headers
            .get(name)
            .ok_or_else(|| anyhow!("the message has no `{name}` header"))?;
        v.as_str()
            .parse()
            .map_err(|_| anyhow!("the `{name}` header `{}` is not a number", v.as_str()))
    };
    let first_index = get(FIRST)? as u64;
    let seq = match headers.get(SEQ) {
        Some(_) => get(SEQ)? as u64,
        None => first_index / chunk_size.max(1) as u64,
    };
    Ok(ChunkId {
        job: get(JOB)?,
        seq,
        first_index,
        events: get(EVENTS)? as u64,
    })
}
