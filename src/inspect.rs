//! `ventanilla verify`: checks the signature of a raw AS4 message or signal from a file
//! (HTTP headers optional, MIME or bare SOAP), reporting every reference.

use crate::mime::{self, Packaging};
use crate::pki::trust::{RevocationPolicy, TrustStore, subject_of};
use crate::wss::keyinfo::KeyReference;
use crate::wss::ns;
use crate::wss::verify::{PartToVerify, check_each_reference, declared_signature_method, verify_envelope};
use crate::wss::xml::Xml;
use bytes::Bytes;
use openssl::x509::X509;
use std::path::{Path, PathBuf};

pub struct VerifyOptions {
    pub truststore: Option<PathBuf>,
    /// The signer's certificate, when the message references it by SKI or issuer/serial.
    pub cert: Option<PathBuf>,
    /// The recipient's key and certificate, to decrypt encrypted attachments first.
    pub decrypt: Option<(PathBuf, PathBuf)>,
}

/// The report: one line per reference, then the verdict.
pub struct Report {
    pub lines: Vec<String>,
    pub valid: bool,
    /// Valid as far as it could be checked, with parts left unchecked (encrypted attachments
    /// without the key): `verify` exits 3, so a script does not take it for a full check.
    pub partial: bool,
}

/// Splits optional HTTP headers from the body and finds the Content-Type.
fn split_http(raw: &[u8]) -> (Option<String>, &[u8]) {
    let trimmed = raw.iter().position(|b| !b.is_ascii_whitespace()).map(|i| &raw[i..]).unwrap_or(raw);
    if trimmed.starts_with(b"<") || trimmed.starts_with(b"\xEF\xBB\xBF") {
        return (None, trimmed);
    }
    let (end, sep) = match (find(raw, b"\r\n\r\n"), find(raw, b"\n\n")) {
        (Some(a), Some(b)) if b < a => (b, 2),
        (Some(a), _) => (a, 4),
        (None, Some(b)) => (b, 2),
        (None, None) => return (None, raw),
    };
    let head = String::from_utf8_lossy(&raw[..end]).replace("\r\n", "\n");
    // Unfold continuation lines, then look for Content-Type.
    let unfolded = head.replace("\n ", " ").replace("\n\t", " ");
    let content_type = unfolded.lines().find_map(|l| {
        l.split_once(':')
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.trim().to_owned())
    });
    if content_type.is_none() && trimmed.starts_with(b"--") {
        return (None, trimmed);
    }
    (content_type, &raw[end + sep..])
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub async fn verify_file(path: &Path, options: &VerifyOptions) -> Result<Report, String> {
    let raw = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // An evidence bundle (`GET /api/v1/messages/{id}/evidence`) is JSON; messages are XML or MIME.
    if raw.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        let bundle: crate::evidence::Bundle =
            serde_json::from_slice(&raw).map_err(|e| format!("{}: not an evidence bundle: {e}", path.display()))?;
        let check = crate::evidence::check(&bundle);
        return Ok(Report { lines: check.lines, valid: check.valid, partial: false });
    }
    let (content_type, body) = split_http(&raw);
    let work = tempfile_dir()?;
    let mut parts: Vec<(String, String, PathBuf)> = Vec::new();
    let envelope = match content_type.as_deref().map(|c| mime::parse_packaging(Some(c))) {
        Some(Ok(Packaging::Multipart { boundary, start })) => {
            // Sample files are often stored with LF line ends; MIME needs CRLF.
            let body = if find(body, b"\r\n").is_none() {
                String::from_utf8_lossy(body).replace('\n', "\r\n").into_bytes()
            } else {
                body.to_vec()
            };
            let mut sink = mime::MemorySink::default();
            let stream = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(body))]);
            let m = mime::read_multipart(stream, &boundary, start.as_deref(), mime::Limits::default(), &mut sink)
                .await
                .map_err(|e| format!("{}: {}", e.code, e.detail))?;
            for (i, ((cid, bytes), info)) in sink.parts.into_iter().zip(m.parts).enumerate() {
                let file = work.path.join(format!("part-{}", i + 1));
                std::fs::write(&file, bytes).map_err(|e| e.to_string())?;
                parts.push((cid, info.content_type, file));
            }
            m.envelope
        }
        Some(Err(e)) => return Err(format!("{}: {}", e.code, e.detail)),
        _ => body.to_vec(),
    };
    let xml = Xml::parse(&envelope).map_err(|e| e.to_string())?;
    let mut lines = Vec::new();

    // Encrypted parts are verified over their plaintext.
    let encrypted = envelope.windows(b"EncryptedData".len()).any(|w| w == b"EncryptedData");
    if encrypted && !parts.is_empty() {
        match &options.decrypt {
            None => {}
            Some((key, cert)) => {
                let credential = crate::wss::sign::Credential {
                    key: crate::pki::keys::load_key(key, None).map_err(|e| e.to_string())?,
                    cert: crate::pki::keys::load_cert(cert).map_err(|e| e.to_string())?,
                };
                let transport = match crate::pki::keys::kind_of(&credential.key) {
                    crate::pki::keys::KeyKind::X25519 => crate::wss::decrypt::KeyTransport::X25519,
                    _ => crate::wss::decrypt::KeyTransport::RsaOaep,
                };
                let files: Vec<crate::wss::decrypt::EncryptedFile> = parts
                    .iter()
                    .map(|(cid, _, p)| crate::wss::decrypt::EncryptedFile {
                        content_id: cid,
                        path: p,
                        overwrite: false, // the operator's files
                        in_memory: None,
                    })
                    .collect();
                let decrypted = crate::wss::decrypt::decrypt_parts(&xml, &files, transport, &[credential])
                    .map_err(|e| format!("{}: {}", e.code, e.detail))?;
                parts = decrypted
                    .into_iter()
                    .map(|d| {
                        (d.content_id, d.content_type.unwrap_or_else(|| "application/octet-stream".into()), d.path)
                    })
                    .collect();
                lines.push("attachments decrypted".into());
            }
        }
    }
    // Ciphertext cannot be checked against digests of the plaintext: say so, and judge the rest.
    let attachments_unchecked = encrypted && !parts.is_empty() && options.decrypt.is_none();
    let to_verify: Vec<PartToVerify> = parts
        .iter()
        .map(|(cid, ct, p)| PartToVerify { content_id: cid, content_type: ct, content: p.into() })
        .collect();
    for check in check_each_reference(&xml, &to_verify) {
        lines.push(match check.result {
            _ if attachments_unchecked && check.uri.starts_with("cid:") => {
                format!("{}: not checked (encrypted; pass --decrypt-key and --decrypt-cert)", check.uri)
            }
            Ok(()) => format!("{}: OK", check.uri),
            Err(e) => format!("{}: FAILED ({e})", check.uri),
        });
    }
    let method = declared_signature_method(&xml).unwrap_or_default();
    if method != ns::RSA_SHA256 && method != ns::ED25519 {
        lines.push(format!("INVALID: SignatureMethod '{method}' is not RSA-SHA256 or Ed25519"));
        return Ok(Report { lines, valid: false, partial: false });
    }
    let given = match &options.cert {
        Some(c) => Some(crate::pki::keys::load_cert(c).map_err(|e| e.to_string())?),
        None => None,
    };
    let resolve = |r: &KeyReference| -> Result<X509, crate::ebms::EbmsError> {
        let fail = |d: &str| crate::ebms::EbmsError::new(crate::ebms::EbmsCode::FailedAuthentication, d);
        match (r, &given) {
            (_, Some(cert)) if r.matches(cert) => Ok(cert.clone()),
            (_, Some(_)) => Err(fail("the message's key reference does not match --cert")),
            (KeyReference::Certificate(chain), None) => chain.first().cloned().ok_or_else(|| fail("empty token")),
            (_, None) => Err(fail("the message references its certificate by SKI or issuer/serial: pass --cert")),
        }
    };
    let checked = if attachments_unchecked {
        crate::wss::verify::verify_envelope_without_attachments(&xml, &method, &resolve)
    } else {
        verify_envelope(&xml, &to_verify, &method, &resolve)
    };
    let verified = match checked {
        Ok(v) => v,
        Err(e) => {
            lines.push(format!("INVALID: {} {}", e.code, e.detail));
            return Ok(Report { lines, valid: false, partial: false });
        }
    };
    if let Some(truststore) = &options.truststore {
        let trust = TrustStore::load(truststore, &[], RevocationPolicy::Off)?;
        if let Err(e) = trust.validate(&verified.signer, &verified.intermediates) {
            lines.push(format!("INVALID: {e}"));
            return Ok(Report { lines, valid: false, partial: false });
        }
        lines.push(format!("certificate chain of '{}' is trusted", subject_of(&verified.signer)));
    }
    if attachments_unchecked {
        lines.push(format!(
            "VALID as far as checked: signature by '{}' ({method}) over the header and Body; the encrypted attachments were not checked",
            subject_of(&verified.signer)
        ));
        return Ok(Report { lines, valid: true, partial: true });
    }
    lines.push(format!("VALID: signature by '{}' ({method})", subject_of(&verified.signer)));
    Ok(Report { lines, valid: true, partial: false })
}

struct TempDir {
    path: PathBuf,
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn tempfile_dir() -> Result<TempDir, String> {
    let path = std::env::temp_dir().join(format!("ventanilla-verify-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&path).map_err(|e| e.to_string())?;
    Ok(TempDir { path })
}
