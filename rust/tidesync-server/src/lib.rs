//! A RhoConnect-compatible reference sync server.
//!
//! It speaks the RhoConnect protocol (version 3) the way RhoConnect 7.8 does on the wire — the
//! deprecated `/application/*` routes Rhodes clients use and the REST routes — including the
//! quirks a client can observe (token acknowledgement, errors delivered once, deferred CUD work).
//! It is used by TideSync's tests, the demo and the benchmarks, and can be run on its own with
//! `tidesync serve`.
//!
//! ```no_run
//! use tidesync_server::{App, Server, ServerConfig};
//! let server = Server::start(ServerConfig::new(App::transcripts())).expect("bind");
//! println!("sync server: {}", server.sync_url()); // http://127.0.0.1:PORT/application/
//! ```

pub mod adapter;
pub mod app;
mod backend;
mod blob;
mod bulk;
mod bulk_job;
mod cookie;
mod cud;
pub mod dataset;
pub mod fault;
#[doc(hidden)]
pub mod fuzzing;
mod http;
mod json;
mod md;
mod net;
pub mod obj;
mod search;
pub mod sqlite_backend;
mod state;
#[cfg(test)]
mod wire_props;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

pub use adapter::{AdapterError, Authenticator, SourceAdapter};
pub use app::{App, DatasetSpec, Partition, SourceDef};
pub use backend::{AppliedChange, AppliedChanges, AppliedOp, Backend, BackendError};
pub use blob::BLOB_SHA256_HEADER;
pub use fault::{FaultKind, FaultRule, Faults, Route};
pub use obj::{Obj, ObjRef};

/// How a server is started.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The application served.
    pub app: App,
    /// Address to bind; port 0 picks a free port. Default `127.0.0.1:0`.
    pub addr: SocketAddr,
    /// Fault injection (off by default).
    pub faults: Faults,
    /// Largest request body accepted, in bytes (default 16 MiB); larger bodies get `413`.
    pub body_limit: usize,
    /// Where bulk data files are written. Default: a fresh temporary directory removed on stop.
    pub data_dir: Option<PathBuf>,
    /// Secret for the session cookie HMAC. Default: random per server.
    pub secret: Option<Vec<u8>>,
    /// Serve the transcripts' test-harness route `POST /app/v1/Product/test_backend_change`.
    pub test_routes: bool,
    /// Serve HTTPS with this certificate (default: plain HTTP).
    pub tls: Option<TlsIdentity>,
}

/// A TLS server identity: the certificate chain (leaf first) and its private key, in PEM.
#[derive(Clone)]
pub struct TlsIdentity {
    /// `-----BEGIN CERTIFICATE-----` blocks, the server's certificate first.
    pub cert_chain_pem: String,
    /// The private key (`PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`).
    pub key_pem: String,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

impl ServerConfig {
    /// Defaults for `app`: loopback, port 0, no faults.
    pub fn new(app: App) -> Self {
        Self {
            app,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            faults: Faults::none(),
            body_limit: 16 * 1024 * 1024,
            data_dir: None,
            secret: None,
            test_routes: false,
            tls: None,
        }
    }
}

/// A running server on its own thread and tokio runtime. Stopped on [`Server::stop`] or drop.
pub struct Server {
    addr: SocketAddr,
    scheme: &'static str,
    state: Arc<state::State>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds `config.addr` and serves on a background thread.
    ///
    /// # Errors
    /// The address cannot be bound, or the data directory cannot be created.
    pub fn start(config: ServerConfig) -> std::io::Result<Server> {
        let std_listener = std::net::TcpListener::bind(config.addr)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let tls = config.tls.as_ref().map(net::tls_acceptor).transpose()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let state = Arc::new(state::State::new(config)?);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name(format!("tidesync-server-{}", addr.port()))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("tidesync-server-worker")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        log::error!("server runtime: {e}");
                        return;
                    }
                };
                rt.block_on(async move {
                    match tokio::net::TcpListener::from_std(std_listener) {
                        Ok(listener) => {
                            net::serve(listener, st, tls, async move {
                                let _ = rx.await;
                            })
                            .await
                        }
                        Err(e) => log::error!("server listener: {e}"),
                    }
                });
                rt.shutdown_timeout(std::time::Duration::from_secs(2));
            })?;
        Ok(Server {
            addr,
            scheme,
            state,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` (`https://` with TLS; no trailing slash).
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// The Rhodes `syncserver` URL: `http://ADDR/application/`.
    pub fn sync_url(&self) -> String {
        format!("{}://{}/{}/", self.scheme, self.addr, self.state.app().name)
    }

    /// Changes the backend data as another user or system would.
    pub fn backend(&self) -> Backend {
        Backend::new(self.state.clone())
    }

    /// The live fault plan.
    pub fn faults(&self) -> Faults {
        self.state.faults().clone()
    }

    /// Stops serving and joins the server thread.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.state.faults().release_stalls();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// Serves on the current thread until `shutdown` resolves (the CLI passes Ctrl-C).
/// `on_bound` is called with the bound address before the first request is accepted.
///
/// # Errors
/// Binding or runtime creation failed.
pub fn serve_blocking(
    config: ServerConfig,
    on_bound: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("tidesync-server-worker")
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.addr).await?;
        let addr = listener.local_addr()?;
        let tls = config.tls.as_ref().map(net::tls_acceptor).transpose()?;
        let state = Arc::new(state::State::new(config)?);
        on_bound(addr);
        net::serve(listener, state, tls, shutdown).await;
        Ok(())
    })
}
