//! An OTLP/gRPC trace sink for `--trace-ratio`: it accepts every export and
//! counts the spans, so the spawned tokend does its whole export work
//! (batching, encoding, sending over loopback) and that cost shows in
//! tokend's CPU per request, while the sink's own CPU (this process, its own
//! thread) does not.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

/// A running sink.
pub struct Sink {
    pub addr: SocketAddr,
    spans: Arc<AtomicU64>,
}

impl Sink {
    /// Spans received so far.
    pub fn spans(&self) -> u64 {
        self.spans.load(Ordering::Relaxed)
    }
}

struct Count(Arc<AtomicU64>);

#[tonic::async_trait]
impl TraceService for Count {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let n: usize = req
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.fetch_add(n as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Binds a loopback port and serves on a thread of its own until the
/// process exits.
pub fn start() -> anyhow::Result<Sink> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let spans = Arc::new(AtomicU64::new(0));
    let counter = spans.clone();
    std::thread::Builder::new()
        .name("otlp-sink".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("sink runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("sink listener");
                let _ = tonic::transport::Server::builder()
                    .add_service(TraceServiceServer::new(Count(counter)))
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                    .await;
            });
        })?;
    Ok(Sink { addr, spans })
}
