//! `ventanilla partner check LINK --config FILE`: before the first message, whether everything
//! a link needs is in place: the P-Mode loads and names this party, the partner's certificates
//! parse, fit the profile and chain to the truststore with their revocation status obtainable
//! under the configured policy, our own keys for the profile are there, and the partner's
//! endpoint answers the AS4 test service message over TLS with a valid signed receipt.

use crate::config::Config;
use crate::msh::AccessPoint;
use std::sync::Arc;

/// One line per check and whether all passed.
pub struct PartnerReport {
    pub lines: Vec<String>,
    pub ok: bool,
}

pub async fn check(config: Config, link_id: &str) -> Result<PartnerReport, String> {
    let pmodes = crate::pmode::load_path(&config.pmodes)
        .map_err(|e| e.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))?;
    let security = crate::msh::security::SecurityContext::load(&config)?;
    // Nothing is stored: the test message is not a message of the store.
    let store =
        Arc::new(crate::store::sqlite::SqliteStore::open(std::path::Path::new(":memory:")).map_err(|e| e.to_string())?);
    let ap = AccessPoint::new(config, store, pmodes, security);
    let mut lines = Vec::new();
    let mut ok = true;
    let mut say = |good: bool, line: String| {
        ok &= good;
        lines.push(format!("{} {line}", if good { "ok  " } else { "FAIL" }));
    };
    let pmodes = ap.pmodes();
    let Some(link) = pmodes.links().iter().find(|l| l.id == link_id).cloned() else {
        let known: Vec<&str> = pmodes.links_of(ap.me()).map(|l| l.id.as_str()).collect();
        return Err(format!("no P-Mode with id '{link_id}'; this party's links: {}", known.join(", ")));
    };
    let Some(partner) = link.partner_of(ap.me()).cloned() else {
        return Err(format!("P-Mode {link_id} does not name this access point's party ({})", ap.me()));
    };
    say(
        true,
        format!(
            "P-Mode {} ({}): {} with {}, profile {}",
            link.id,
            link.file.display(),
            ap.me(),
            partner.id,
            link.profile.as_str()
        ),
    );
    if link.profile.is_secure() {
        say(ap.security.for_profile(link.profile).is_some(), format!("own keys for {}", link.profile.as_str()));
        let trust = ap.security.trust();
        let bound: Vec<(&str, &Vec<u8>)> = partner
            .sign_certs
            .iter()
            .map(|c| ("sign", c))
            .chain(partner.enc_cert.iter().map(|c| ("enc", c)))
            .chain(partner.next_enc_cert.iter().map(|c| ("next enc", c)))
            .collect();
        if bound.is_empty() {
            say(false, format!("the P-Mode binds no certificate of {}", partner.id));
        }
        for (usage, der) in bound {
            let Ok(cert) = openssl::x509::X509::from_der(der) else {
                say(false, format!("{} {usage} certificate does not parse", partner.id));
                continue;
            };
            let subject = crate::pki::trust::subject_of(&cert);
            match &trust {
                None => say(false, format!("{usage} '{subject}': no truststore to check it against")),
                Some(t) => {
                    let trust = t.clone();
                    let checked = crate::blocking::spawn(move || trust.validate(&cert, &[])).await;
                    match checked {
                        Ok(Ok(warnings)) => say(
                            true,
                            format!(
                                "{usage} '{subject}': chains to the truststore, revocation status obtained{}",
                                if warnings.is_empty() { String::new() } else { format!(" ({})", warnings.join("; ")) }
                            ),
                        ),
                        Ok(Err(e)) => say(false, format!("{usage} '{subject}': {e}")),
                        Err(e) => say(false, format!("{usage} '{subject}': check failed: {e}")),
                    }
                }
            }
        }
    }
    let test = crate::msh::connection_test::run(&ap, link_id).await;
    say(
        test.ok,
        format!("endpoint {}: the AS4 test service message (id {}): {}", test.endpoint, test.message_id, test.detail),
    );
    Ok(PartnerReport { lines, ok })
}
