//! A small HTTP/1.1 client for the HTTP ports of Pagoda's processes (a
//! node's `/metrics`, `/v1/stats`, `/readyz`; a Conductor's `/v1/generate`),
//! on hyper: optional TLS (rustls, trusting a given CA), a bearer token,
//! any body framing hyper reads (length, chunked). Feature `http`; used by
//! `pagoda stats`, `pagoda cluster status` and the end-to-end tests.
//!
//! Every request has a deadline ([`Request::timeout`]) covering connect,
//! TLS, sending and reading the whole answer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::api::{Error, Result};

/// TLS to the server: the CA to trust and the name its certificate has.
#[derive(Clone, Debug)]
pub struct Tls {
    /// PEM certificates of the authorities to trust.
    pub ca_pem: Vec<u8>,
    /// The name the server's certificate must carry.
    pub server_name: String,
}

impl Tls {
    /// Reads the CA certificates from a PEM file.
    pub fn from_ca_file(ca: &std::path::Path, server_name: &str) -> Result<Tls> {
        let ca_pem = std::fs::read(ca)
            .map_err(|error| Error::InvalidArgument(format!("{}: {error}", ca.display())))?;
        Ok(Tls {
            ca_pem,
            server_name: server_name.to_owned(),
        })
    }

    fn connector(
        &self,
    ) -> Result<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )> {
        use rustls::pki_types::pem::PemObject;
        let invalid =
            |error: &dyn std::fmt::Display| Error::InvalidArgument(format!("TLS: {error}"));
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&self.ca_pem) {
            roots
                .add(cert.map_err(|error| invalid(&error))?)
                .map_err(|error| invalid(&error))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| invalid(&error))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(self.server_name.clone())
            .map_err(|error| invalid(&error))?;
        Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
    }
}

/// One request.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    /// `host:port` of the server.
    pub addr: &'a str,
    /// `GET` or `POST`.
    pub method: hyper::Method,
    /// Path and query.
    pub path: &'a str,
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<&'a str>,
    /// A JSON body (POST).
    pub body: Option<&'a str>,
    /// TLS, when the port serves it.
    pub tls: Option<&'a Tls>,
    /// Deadline of the whole exchange.
    pub timeout: Duration,
}

impl<'a> Request<'a> {
    /// A GET of `path` with a 10 s deadline.
    pub fn get(addr: &'a str, path: &'a str) -> Request<'a> {
        Request {
            addr,
            method: hyper::Method::GET,
            path,
            token: None,
            body: None,
            tls: None,
            timeout: Duration::from_secs(10),
        }
    }

    /// A POST of a JSON `body` to `path` with a one-minute deadline.
    pub fn post(addr: &'a str, path: &'a str, body: &'a str) -> Request<'a> {
        Request {
            method: hyper::Method::POST,
            body: Some(body),
            timeout: Duration::from_mins(1),
            ..Request::get(addr, path)
        }
    }

    /// With `Authorization: Bearer <token>` (none when `None`).
    #[must_use]
    pub fn token(self, token: Option<&'a str>) -> Request<'a> {
        Request { token, ..self }
    }

    /// Over TLS (plain TCP when `None`).
    #[must_use]
    pub fn tls(self, tls: Option<&'a Tls>) -> Request<'a> {
        Request { tls, ..self }
    }

    /// Sends the request; the status code and the whole body (as text,
    /// invalid UTF-8 replaced).
    pub async fn send(&self) -> Result<(u16, String)> {
        let deadline = self.timeout;
        tokio::time::timeout(deadline, self.exchange())
            .await
            .map_err(|_| {
                Error::Http(format!(
                    "{}{}: no answer within {deadline:?}",
                    self.addr, self.path
                ))
            })?
    }

    /// [`Request::send`] from synchronous code (inside a Tokio runtime too:
    /// the exchange runs on its own thread and runtime, and this thread
    /// waits for it).
    pub fn send_blocking(&self) -> Result<(u16, String)> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|error| Error::Http(format!("starting a runtime: {error}")))?
                        .block_on(self.send())
                })
                .join()
                .unwrap_or_else(|_| Err(Error::Http("the HTTP thread panicked".into())))
        })
    }

    async fn exchange(&self) -> Result<(u16, String)> {
        let failed = |what: &str, error: &dyn std::fmt::Display| {
            Error::Http(format!(
                "{} {}{}: {what}: {error}",
                self.method, self.addr, self.path
            ))
        };
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|error| failed("connecting", &error))?;
        let _ = tcp.set_nodelay(true);
        let mut request = hyper::Request::builder()
            .method(&self.method)
            .uri(self.path)
            .header(HOST, self.addr);
        if let Some(token) = self.token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if self.body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let body = Full::new(Bytes::from(self.body.unwrap_or_default().to_owned()));
        let request = request
            .body(body)
            .map_err(|error| Error::InvalidArgument(error.to_string()))?;
        match self.tls {
            None => exchange(tcp, request).await,
            Some(tls) => {
                let (connector, name) = tls.connector()?;
                let stream = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|error| failed("TLS", &error))?;
                exchange(stream, request).await
            }
        }
        .map_err(|error| failed("HTTP", &error))
    }
}

async fn exchange<S>(
    stream: S,
    request: hyper::Request<Full<Bytes>>,
) -> std::result::Result<(u16, String), hyper::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(connection);
    let answer = async {
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
    .await;
    driver.abort();
    answer
}
