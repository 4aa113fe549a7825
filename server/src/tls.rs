//! TLS (rustls, ring) for both listeners: tonic's own TLS for gRPC, and a
//! rustls acceptor in front of the HTTP router (HTTP/1.1 and HTTP/2 by ALPN).

use std::future::Future;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;
use crate::error::{Error, Result};

fn read(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(Error::io(format_args!("tls: {}", path.display())))
}

/// tonic's server TLS settings.
pub(crate) fn grpc_config(settings: &TlsConfig) -> Result<tonic::transport::ServerTlsConfig> {
    let identity =
        tonic::transport::Identity::from_pem(read(&settings.cert)?, read(&settings.key)?);
    Ok(tonic::transport::ServerTlsConfig::new().identity(identity))
}

/// A rustls acceptor for the HTTP listener.
pub(crate) fn acceptor(settings: &TlsConfig) -> Result<TlsAcceptor> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read(&settings.cert)?)
            .collect::<Result<_, _>>()
            .map_err(|error| Error::Tls(format!("{}: {error}", settings.cert.display())))?;
    let key = PrivateKeyDer::from_pem_slice(&read(&settings.key)?)
        .map_err(|error| Error::Tls(format!("{}: {error}", settings.key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| Error::Tls(error.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|error| Error::Tls(error.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `router` over TLS until `shutdown` resolves.
pub(crate) async fn serve_https(
    mut listener: crate::listen::Listener,
    acceptor: TlsAcceptor,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => accepted,
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let io = hyper_util::rt::TokioIo::new(stream);
            let service = hyper_util::service::TowerToHyperService::new(router);
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(io, service)
                    .await;
        });
    }
}
