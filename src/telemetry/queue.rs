//! [`BoundedExport`]: a span processor with a bounded queue. Ending a span never blocks and
//! never allocates beyond the queue: when the collector is down, slow or refusing, spans are
//! dropped and counted (`healthgate_dropped_spans_total`) instead of piling up, each export is
//! cut off at the export timeout, and shutdown waits at most that long.
//!
//! Why not opentelemetry_sdk's `BatchSpanProcessor` (the house issue asked): in 0.33 its
//! default form exports from a dedicated OS thread with `futures_executor::block_on`, where the
//! tonic OTLP exporter panics with "there is no reactor running" (reported against the SDK's
//! users, e.g. agentgateway#1621) and every later span is dropped unseen; its Tokio form is
//! behind the `experimental_trace_batch_span_processor_with_async_runtime` feature; and
//! neither can count what it drops, which `healthgate_dropped_spans_total` must. This one is a
//! Tokio task, ~150 lines, and `tests/it/otlp.rs` measures it: with a black-holed collector
//! Check latency and probing are unchanged and the drops are counted.

use std::sync::Mutex;
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

/// Spans sent per export.
const BATCH: usize = 512;
/// How long a partial batch waits for company.
const LINGER: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct BoundedExport {
    queue: Mutex<Option<mpsc::Sender<SpanData>>>,
    done: Mutex<std::sync::mpsc::Receiver<()>>,
    dropped: Counter,
}

impl BoundedExport {
    /// Starts the export task on the current Tokio runtime.
    pub(crate) fn start<E: SpanExporter + 'static>(
        exporter: E,
        capacity: usize,
        timeout: Duration,
        dropped: Counter,
    ) -> BoundedExport {
        let (tx, rx) = mpsc::channel(capacity);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        tokio::spawn(export_loop(exporter, rx, timeout, dropped.clone(), done_tx));
        BoundedExport {
            queue: Mutex::new(Some(tx)),
            done: Mutex::new(done_rx),
            dropped,
        }
    }
}

async fn export_loop<E: SpanExporter>(
    exporter: E,
    mut rx: mpsc::Receiver<SpanData>,
    timeout: Duration,
    dropped: Counter,
    done: std::sync::mpsc::Sender<()>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let first = rx.recv().await;
        let closed = first.is_none();
        batch.extend(first);
        let linger = tokio::time::sleep(LINGER);
        tokio::pin!(linger);
        while !closed && batch.len() < BATCH {
            tokio::select! {
                span = rx.recv() => match span {
                    Some(span) => batch.push(span),
                    None => break,
                },
                () = &mut linger => break,
            }
        }
        if !batch.is_empty() {
            let n = batch.len() as u64;
            let sent =
                tokio::time::timeout(timeout, exporter.export(std::mem::take(&mut batch))).await;
            if !matches!(sent, Ok(Ok(()))) {
                dropped.inc_by(n);
            }
        }
        if closed || rx.is_closed() && rx.is_empty() {
            break;
        }
    }
    let _ = exporter.shutdown_with_timeout(timeout);
    let _ = done.send(());
}

impl SpanProcessor for BoundedExport {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        let queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let queued = queue.as_ref().is_some_and(|q| q.try_send(span).is_ok());
        if !queued {
            // Full, or shut down: drop and count, never wait.
            self.dropped.inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        // Closing the queue lets the task export what is left, then stop.
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).take();
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        done.recv_timeout(timeout)
            .map_err(|_| OTelSdkError::Timeout(timeout))
    }
}
