//! The NATS JetStream work queue: ingest nodes publish a job's chunks to
//! one stream, and every `wasmpipe worker` pulls from one durable consumer,
//! so JetStream hands each chunk to one worker at a time and hands it to
//! another when its worker goes silent for `ack_wait`.
//!
//! A message is one chunk: its events as NDJSON in the payload, and in its
//! headers the job and the chunk's event range. The message id (JetStream
//! de-duplicates by it) is that range, so a publish retried after a lost
//! acknowledgement is stored once.

use super::postgres::ChunkRange;
use crate::manifest::QueueSection;
use anyhow::{Context as _, Result, anyhow};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use std::time::Duration;

const JOB: &str = "Wasmpipe-Job";
const FIRST: &str = "Wasmpipe-First";
const EVENTS: &str = "Wasmpipe-Events";
/// The durable consumer all workers of a pipeline share.
const CONSUMER: &str = "workers";

/// A pipeline's chunk stream.
#[derive(Clone)]
pub struct ChunkQueue {
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
    /// NATS is unreachable or did not answer.
    Unavailable(anyhow::Error),
}

impl ChunkQueue {
    /// Connects to NATS and creates the stream if it does not exist.
    pub async fn connect(q: &QueueSection, pipeline: &str) -> Result<ChunkQueue> {
        let url = q.nats_url();
        let client = async_nats::ConnectOptions::new()
            .name(format!("wasmpipe {pipeline}"))
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .connect(&url)
            .await
            .with_context(|| {
                format!("cannot connect to NATS at {url}; hint: is nats-server running with JetStream (`nats-server -js`)?")
            })?;
        let js = jetstream::new(client);
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
        .map_err(|e| anyhow!("cannot create the JetStream stream `{name}`: {e}; hint: start nats-server with JetStream enabled (`-js`)"))?;
        Ok(ChunkQueue {
            js,
            stream: name,
            subject,
            ack_wait: q.ack_wait.0,
        })
    }

    /// Publishes chunks and waits until JetStream has stored every one.
    /// `chunks` are NDJSON data and event counts, in order from event 0.
    pub async fn publish_job(
        &self,
        job: i64,
        first_index: u64,
        chunks: &[(Vec<u8>, u64)],
    ) -> Result<(), PublishFailure> {
        let mut acks = Vec::with_capacity(chunks.len());
        let mut first = first_index;
        for (data, events) in chunks {
            let range = ChunkRange {
                job,
                first_index: first,
                events: *events,
            };
            first += events;
            acks.push(self.send(range, Bytes::copy_from_slice(data)).await?);
        }
        for ack in acks {
            ack.await.map_err(classify)?;
        }
        Ok(())
    }

    /// Publishes one chunk and waits for JetStream to store it.
    pub async fn publish(&self, range: ChunkRange, data: Bytes) -> Result<(), PublishFailure> {
        self.send(range, data).await?.await.map_err(classify)?;
        Ok(())
    }

    async fn send(
        &self,
        range: ChunkRange,
        data: Bytes,
    ) -> Result<jetstream::context::PublishAckFuture, PublishFailure> {
        let mut headers = HeaderMap::new();
        headers.insert(JOB, range.job.to_string().as_str());
        headers.insert(FIRST, range.first_index.to_string().as_str());
        headers.insert(EVENTS, range.events.to_string().as_str());
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

    /// How long a worker may go silent.
    pub fn ack_wait(&self) -> Duration {
        self.ack_wait
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
            PublishFailure::Unavailable(e) => write!(f, "{e:#}"),
        }
    }
}

/// The chunk range a message carries.
pub fn range_of(msg: &jetstream::Message) -> Result<ChunkRange> {
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
    Ok(ChunkRange {
        job: get(JOB)?,
        first_index: get(FIRST)? as u64,
        events: get(EVENTS)? as u64,
    })
}
