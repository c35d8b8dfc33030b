//! The gRPC port's mutual TLS, done here rather than by tonic so that the certificate and
//! the client CA can be reloaded (`sealtrail_ops::tls`): each connection is accepted with
//! the configuration current at the time; open connections keep theirs.
//!
//! Handshakes run in their own tasks, with a deadline, so a slow client delays no other;
//! tonic receives only finished TLS streams (and reads the client certificate from them).

use std::time::Duration;

use sealtrail_ops::tls::{ReloadingServer, TlsFiles, TlsMetrics};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use crate::Error;

/// Time a client gets to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for the server to take them.
const ACCEPTED_QUEUE: usize = 64;

/// The signer's server configuration, watched for changes; its certificate's expiry is
/// exported as component `signer`.
pub fn server_tls(files: &crate::TlsFiles, metrics: &TlsMetrics) -> Result<ReloadingServer, Error> {
    let files = TlsFiles {
        cert: files.cert.clone(),
        key: files.key.clone(),
        ca: files.client_ca.clone(),
    };
    // gRPC is HTTP/2 only; tonic's clients insist on negotiating it.
    let tls = ReloadingServer::server(files, vec![b"h2".to_vec()], "signer", metrics)
        .map_err(|e| Error::Config(e.to_string()))?;
    tls.watch(sealtrail_ops::tls::RELOAD_INTERVAL);
    Ok(tls)
}

/// Accepts on `listener` until `shutdown` and yields each connection once its handshake
/// succeeded (failed ones are logged and closed).
pub fn incoming(
    listener: TcpListener,
    tls: ReloadingServer,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(ACCEPTED_QUEUE);
    tokio::spawn(async move {
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = sealtrail_ops::accept(&listener) => accepted,
                () = &mut shutdown => return,
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => tracing::warn!(%peer, error = %e, "TLS handshake refused"),
                    Err(_) => tracing::warn!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
