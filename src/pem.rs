//! Certificates read from PEM files, for every TLS client and server of the process.

use std::path::Path;

use rustls::pki_types::{CertificateDer, pem::PemObject};

/// The CA certificates of the PEM file `path` (given as `flag`).
pub(crate) fn read_roots(flag: &str, path: &Path) -> Result<rustls::RootCertStore, String> {
    let bad = |error: &dyn std::fmt::Display| format!("{flag} {}: {error}", path.display());
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(path).map_err(|error| bad(&error))? {
        roots
            .add(certificate.map_err(|error| bad(&error))?)
            .map_err(|error| bad(&error))?;
    }
    Ok(roots)
}
