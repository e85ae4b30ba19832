//! The HTTP server's TLS: a rustls server configuration (aws-lc-rs, the provider the OTLP client
//! uses) built from the web configuration's `tls_server_config`, rebuilt when its certificate,
//! key or client CA files change; and the accepted connection, plain or TLS.
//!
//! A connection speaking plain HTTP to the TLS port gets a short `400` in plain HTTP saying so
//! (as Go's servers answer), instead of a TLS alert the client cannot read.

use crate::web_config::{ClientAuth, Curve, Pem, TlsSettings, TlsVersion, canonical_suite};
use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Why a connection to the TLS port was not accepted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AcceptError {
    /// It spoke plain HTTP, and was answered `400`.
    #[error("plain HTTP on the HTTPS port")]
    PlainHttp,
    /// The handshake failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The crypto provider of every TLS connection of the bridge: aws-lc-rs, restricted to the
/// configured cipher suites and key exchange groups.
fn provider(settings: &TlsSettings) -> Result<Arc<CryptoProvider>, String> {
    use rustls::crypto::aws_lc_rs::{self, kx_group};
    let mut provider = aws_lc_rs::default_provider();
    if !settings.cipher_suites.is_empty() {
        let mut suites = Vec::new();
        for name in &settings.cipher_suites {
            let wanted = canonical_suite(name);
            let suite = aws_lc_rs::ALL_CIPHER_SUITES
                .iter()
                .find(|s| s.tls13().is_none() && format!("{:?}", s.suite()) == wanted)
                .ok_or_else(|| {
                    let offered: Vec<_> = aws_lc_rs::ALL_CIPHER_SUITES
                        .iter()
                        .filter(|s| s.tls13().is_none())
                        .map(|s| format!("{:?}", s.suite()))
                        .collect();
                    format!(
                        "`tls_server_config.cipher_suites`: `{name}` is not offered; the bridge \
                         (rustls) offers {}",
                        offered.join(", ")
                    )
                })?;
            suites.push(*suite);
        }
        // TLS 1.3's suites are not configurable (as in Go).
        suites.extend(
            aws_lc_rs::DEFAULT_CIPHER_SUITES
                .iter()
                .filter(|s| s.tls13().is_some()),
        );
        provider.cipher_suites = suites;
    }
    if !settings.curve_preferences.is_empty() {
        provider.kx_groups = settings
            .curve_preferences
            .iter()
            .map(|c| match c {
                Curve::X25519 => kx_group::X25519,
                Curve::P256 => kx_group::SECP256R1,
                Curve::P384 => kx_group::SECP384R1,
                Curve::X25519MlKem768 => kx_group::X25519MLKEM768,
            })
            .collect();
    }
    Ok(Arc::new(provider))
}

fn certificates(pem: &Pem, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    crate::pem::certificates(&pem.read()?, &pem.describe(key))
}

/// Builds the server configuration: reads the certificate, its key and the client CA now.
pub(crate) fn server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, String> {
    let provider = provider(settings)?;
    let certs = certificates(&settings.cert, "cert")?;
    let key = crate::pem::private_key(&settings.key.read()?, &settings.key.describe("key"))?;
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::Tls12, &rustls::version::TLS12),
        (TlsVersion::Tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| (settings.min_version..=settings.max_version).contains(v))
    .map(|(_, v)| v)
    .collect();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(|e| format!("`tls_server_config`: {e}"))?;
    let verifier = client_verifier(settings, &provider)?;
    let mut config = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    }
    .with_single_cert(certs, key)
    .map_err(|e| {
        format!(
            "the certificate {} does not go with the key {}: {e}",
            settings.cert.describe("cert"),
            settings.key.describe("key")
        )
    })?;
    config.ignore_client_order = settings.prefer_server_cipher_suites;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn client_verifier(
    settings: &TlsSettings,
    provider: &Arc<CryptoProvider>,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, String> {
    let verifier: Arc<dyn ClientCertVerifier> = match settings.client_auth {
        ClientAuth::NoClientCert => return Ok(None),
        ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert => Arc::new(AnyClient {
            provider: Arc::clone(provider),
            mandatory: settings.client_auth.requires(),
        }),
        ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert => {
            let Some(ca) = &settings.client_ca else {
                return Err("`tls_server_config.client_ca_file` is missing".into());
            };
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca, "client_ca")? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", ca.describe("client_ca")))?;
            }
            let builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider));
            let builder = if settings.client_auth.requires() {
                builder
            } else {
                builder.allow_unauthenticated()
            };
            builder
                .build()
                .map_err(|e| format!("{}: {e}", ca.describe("client_ca")))?
        }
    };
    if settings.client_allowed_sans.is_empty() {
        return Ok(Some(verifier));
    }
    Ok(Some(Arc::new(AllowedSans {
        inner: verifier,
        sans: settings.client_allowed_sans.clone(),
    })))
}

/// `RequestClientCert` and `RequireAnyClientCert`: a client certificate is asked for (and, for
/// the second, required), its signature of the handshake checked, its chain not.
#[derive(Debug)]
struct AnyClient {
    provider: Arc<CryptoProvider>,
    mandatory: bool,
}

impl ClientCertVerifier for AnyClient {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `client_allowed_sans`: the client certificate must also carry one of the names.
#[derive(Debug)]
struct AllowedSans {
    inner: Arc<dyn ClientCertVerifier>,
    sans: Vec<String>,
}

/// The subject alternative names of a certificate, as text: DNS names, e-mail addresses, URIs
/// and IP addresses.
fn sans(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(ext)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    ext.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                Some((*s).to_owned())
            }
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes)
                    .ok()
                    .map(|b| std::net::IpAddr::from(b).to_string()),
                16 => <[u8; 16]>::try_from(*bytes)
                    .ok()
                    .map(|b| std::net::IpAddr::from(b).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

impl ClientCertVerifier for AllowedSans {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if sans(end_entity).iter().any(|san| self.sans.contains(san)) {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The TLS configuration in force: swapped whole when the files change.
#[derive(Debug)]
pub(crate) struct Acceptor {
    config: ArcSwap<ServerConfig>,
}

impl Acceptor {
    pub(crate) fn new(config: Arc<ServerConfig>) -> Self {
        Self {
            config: ArcSwap::new(config),
        }
    }

    pub(crate) fn replace(&self, config: Arc<ServerConfig>) {
        self.config.store(config);
    }

    /// Completes the handshake of `tcp` with the configuration in force now. A client that
    /// speaks plain HTTP gets a `400` saying the port needs HTTPS.
    pub(crate) async fn accept(&self, mut tcp: TcpStream) -> Result<Stream, AcceptError> {
        let mut first = [0u8; 1];
        let n = tcp.peek(&mut first).await?;
        // A TLS connection starts with a handshake record (22); HTTP with a method's letters.
        if n == 1 && first[0].is_ascii_uppercase() {
            let answer = crate::answer::with_body(
                b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n",
                "this port speaks HTTPS: send the request over TLS (https://)",
            );
            tcp.write_all(&answer).await?;
            tcp.shutdown().await?;
            return Err(AcceptError::PlainHttp);
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.load_full());
        Ok(Stream::Tls(Box::new(acceptor.accept(tcp).await?)))
    }
}

/// An accepted connection.
#[derive(Debug)]
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn settings(dir: &Path, extra: &str) -> TlsSettings {
        let text =
            format!("tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n{extra}");
        crate::web_config::WebConfig::parse(&text, dir)
            .expect("valid")
            .tls
            .expect("tls")
    }

    fn write_pair(dir: &Path) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        std::fs::write(dir.join("cert.pem"), cert.pem()).expect("write");
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write");
    }

    #[test]
    fn a_configuration_builds_from_files_and_names_what_is_wrong() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_pair(dir.path());
        let config = server_config(&settings(
            dir.path(),
            "  min_version: TLS13\n  cipher_suites: [TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305]\n  \
             curve_preferences: [X25519]\n",
        ))
        .expect("built");
        assert!(config.ignore_client_order);
        assert_eq!(config.crypto_provider().kx_groups.len(), 1);

        let e = server_config(&settings(
            dir.path(),
            "  cipher_suites: [TLS_RSA_WITH_AES_128_CBC_SHA]\n",
        ))
        .expect_err("CBC");
        assert!(
            e.contains("`TLS_RSA_WITH_AES_128_CBC_SHA` is not offered"),
            "{e}"
        );

        std::fs::write(dir.path().join("key.pem"), "junk").expect("write");
        let e = server_config(&settings(dir.path(), "")).expect_err("no key");
        assert!(e.contains("key.pem holds no PEM private key"), "{e}");
        write_pair(dir.path());
        let other = tempfile::tempdir().expect("tempdir");
        write_pair(other.path());
        std::fs::copy(other.path().join("key.pem"), dir.path().join("key.pem")).expect("copy");
        let e = server_config(&settings(dir.path(), "")).expect_err("mismatch");
        assert!(e.contains("does not go with the key"), "{e}");
        std::fs::remove_file(dir.path().join("cert.pem")).expect("remove");
        let e = server_config(&settings(dir.path(), "")).expect_err("missing");
        assert!(e.contains("cannot read"), "{e}");
    }

    #[test]
    fn sans_of_every_kind_are_read() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["prometheus.example".into()]).expect("params");
        params.subject_alt_names.extend([
            rcgen::SanType::IpAddress("10.0.0.1".parse().expect("ip")),
            rcgen::SanType::Rfc822Name("ops@example.com".try_into().expect("email")),
            rcgen::SanType::URI("spiffe://example/prometheus".try_into().expect("uri")),
        ]);
        let cert = params.self_signed(&key).expect("cert");
        assert_eq!(
            sans(cert.der()),
            [
                "prometheus.example",
                "10.0.0.1",
                "ops@example.com",
                "spiffe://example/prometheus"
            ]
        );
    }
}
