//! TLS for kvserver, with rustls: server certificates that can be reloaded
//! without dropping the listener, and optional client certificates (mTLS).
//!
//! [`TlsSetup`] holds the certificate in a [`ReloadableCert`] that rustls asks
//! at every handshake, so [`TlsSetup::reload`] (on SIGHUP, see
//! `server::run`) changes what new connections get while open connections
//! go on. [`incoming`] turns a TCP listener into a stream of TLS connections
//! for tonic: each handshake runs in a task of its own, so a slow or broken
//! client never holds up the others.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::Connected;
use tracing::{debug, warn};

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the server's certificate comes from.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first (`--tls-cert`).
    pub cert: PathBuf,
    /// PEM private key (`--tls-key`).
    pub key: PathBuf,
    /// PEM CA certificates that client certificates must chain to
    /// (`--tls-client-ca`); without it, clients need no certificate.
    pub client_ca: Option<PathBuf>,
}

/// The certificate handed to every new handshake; replaced by a reload.
#[derive(Debug)]
struct ReloadableCert(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.0.read().unwrap_or_else(|p| p.into_inner()),
        ))
    }
}

/// A loaded TLS configuration, ready to accept connections.
pub struct TlsSetup {
    files: TlsFiles,
    cert: Arc<ReloadableCert>,
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSetup")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// The PEM certificates of `path`, at least one; `what` names the file's
/// role in errors.
fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    pem_certs(&read_pem(path, what)?, path, what)
}

/// The PEM certificates in `pem`, the contents of `path`, at least one;
/// `what` names the file's role in errors. `kv` checks its files with it
/// too, so that a file that holds no certificate is reported as such and
/// not as a failed handshake.
pub(crate) fn pem_certs(
    pem: &[u8],
    path: &Path,
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// The first PEM private key in `pem`, the contents of `path`.
pub(crate) fn pem_key(pem: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        pem::Error::NoItemsFound => format!("{} holds no PEM private key", path.display()),
        e => format!("cannot read the private key {}: {e}", path.display()),
    })
}

/// The contents of `path`; `what` names the file's role in errors.
pub(crate) fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))
}

fn read_cert_and_key(files: &TlsFiles) -> Result<CertifiedKey, String> {
    let certs = read_certs(&files.cert, "certificate")?;
    let key = pem_key(&read_pem(&files.key, "private key")?, &files.key)?;
    CertifiedKey::from_der(certs, key, &provider()).map_err(|e| {
        format!(
            "the key {} does not fit the certificate {}: {e}",
            files.key.display(),
            files.cert.display()
        )
    })
}

fn read_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path, "client CA")? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
    }
    Ok(roots)
}

impl TlsSetup {
    /// Loads the files; the error names the file and what is wrong with it.
    pub fn load(files: TlsFiles) -> Result<TlsSetup, String> {
        let cert = Arc::new(ReloadableCert(RwLock::new(Arc::new(read_cert_and_key(
            &files,
        )?))));
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))?;
        let builder = match &files.client_ca {
            Some(path) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(read_roots(path)?),
                    provider(),
                )
                .build()
                .map_err(|e| format!("cannot use the client CA {}: {e}", path.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config =
            builder.with_cert_resolver(Arc::clone(&cert) as Arc<dyn ResolvesServerCert>);
        // h2 for gRPC; HTTP/1.1 for gRPC-Web and for the HTTP listener
        // (browsers and curl may ask for either).
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsSetup {
            files,
            cert,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Reads the certificate and key again; new connections get them, open
    /// ones keep theirs. On error the old certificate stays.
    pub fn reload(&self) -> Result<(), String> {
        let fresh = read_cert_and_key(&self.files)?;
        *self.cert.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        Ok(())
    }
}

/// TLS connections made from the TCP `connections` (already admitted by the
/// connection limit, so a flood of them costs no handshakes beyond it), for
/// `serve_with_incoming`. Each handshake runs in a task of its own, within
/// [`HANDSHAKE_TIMEOUT`]. The loop ends when the stream is dropped (the
/// server stopped accepting) or the connections end.
pub fn incoming<IO>(
    connections: impl Stream<Item = Result<IO, io::Error>> + Send + 'static,
    tls: Arc<TlsSetup>,
) -> ReceiverStream<Result<TlsStream<IO>, io::Error>>
where
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IO::ConnectInfo: std::fmt::Debug,
{
    let (sender, receiver) = mpsc::channel(64);
    // A client the handshake refuses sees only a closed connection, so the
    // server's log is where the reason is; throttled, since a port scanner
    // or a misconfigured client in a loop fails over and over.
    let failures = Arc::new(crate::transport::ThrottledWarning::default());
    tokio::spawn(async move {
        let mut connections = std::pin::pin!(connections);
        loop {
            let tcp = tokio::select! {
                next = connections.next() => match next {
                    Some(Ok(tcp)) => tcp,
                    // Already reported, after a pause (server.rs).
                    Some(Err(_)) => continue,
                    None => return,
                },
                () = sender.closed() => return,
            };
            let peer = tcp.connect_info();
            let acceptor = tls.acceptor.clone();
            let sender = sender.clone();
            let failures = Arc::clone(&failures);
            tokio::spawn(async move {
                let failure =
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = sender.send(Ok(stream)).await;
                            return;
                        }
                        Ok(Err(error)) => error.to_string(),
                        Err(_) => "timed out".to_owned(),
                    };
                match failures.occurred() {
                    Some(failed) => warn!(
                        failed,
                        "TLS handshake with {peer:?} failed: {failure} (a plaintext client, or \
                         one without a certificate the server accepts?); {failed} failed \
                         handshake(s) since the last warning"
                    ),
                    None => debug!("TLS handshake with {peer:?} failed: {failure}"),
                }
            });
        }
    });
    ReceiverStream::new(receiver)
}
