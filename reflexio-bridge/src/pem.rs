//! PEM text: the certificates or the private key it holds, with errors naming where it came from.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The certificates of PEM text, at least one; `what` names where it came from in the error.
pub(crate) fn certificates(
    bytes: &[u8],
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} is not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what} holds no PEM certificate"));
    }
    Ok(certs)
}

/// The private key of PEM text; `what` names where it came from in the error.
pub(crate) fn private_key(bytes: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(bytes)
        .map_err(|e| format!("{what} holds no PEM private key: {e}"))
}
