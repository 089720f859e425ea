//! Short hex digests: the first bytes of a SHA-256, for names that must follow their input.

use ring::digest::{Context, SHA256};

/// The first `bytes` bytes of the SHA-256 of `parts` (hashed one after the other), as lowercase
/// hex.
pub(crate) fn sha256_hex(parts: &[&[u8]], bytes: usize) -> String {
    let mut context = Context::new(&SHA256);
    for part in parts {
        context.update(part);
    }
    context.finish().as_ref()[..bytes]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}
