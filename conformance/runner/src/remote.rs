//! `conformance run --peer URL`: the cases that need no control of the other side, sent to
//! any AS4 endpoint as this access point (its config file: party, keys, P-Modes, trust), on
//! the link with one partner. For a customs IT team testing a new partner before go-live:
//! only the partner's answers are judged, since what it delivers cannot be seen from here.

use super::inject::{Injected, Origin, protected_from};
use super::wire::user_message;
use crate::config::Config;
use crate::ebms::{AgreementRef, Party as EbParty, PartyId, Service};
use crate::pmode::Link;
use crate::transport::{As4Client, BodyStream, TlsIdentity};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub struct Remote {
    pub url: String,
    config: Config,
    link: Arc<Link>,
    leg: usize,
    recipient: PathBuf,
    client: As4Client,
}

impl Remote {
    /// Reads `config` and its P-Modes and finds the link with `partner`; the partner's
    /// encryption certificate is written under `work` for the message builder.
    pub fn load(config: &Path, partner: &str, url: &str, work: &Path) -> Result<Remote, String> {
        let config = Config::load(config).map_err(|e| e.to_string())?;
        let pmodes = crate::pmode::load_path(&config.pmodes)
            .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))?;
        let me = config.party_id.clone();
        let link = pmodes
            .links_of(&me)
            .find(|l| l.partner_of(&me).is_some_and(|p| p.id == partner))
            .cloned()
            .ok_or_else(|| format!("no P-Mode in {} links {me} with {partner}", config.pmodes.display()))?;
        if !link.profile.is_secure() {
            return Err(format!("P-Mode {} uses the unsigned test profile; the remote cases need eDelivery", link.id));
        }
        // The leg whose document we can make: an ePhyto.
        let leg = link
            .legs
            .iter()
            .position(|l| l.document.as_deref() == Some("ephyto") && l.may_send(&me) && !l.pull)
            .ok_or_else(|| format!("P-Mode {} has no ePhyto push leg that {me} may send", link.id))?;
        let partner_party = link.partner_of(&me).ok_or("no partner")?;
        let enc = partner_party
            .enc_cert
            .as_deref()
            .ok_or_else(|| format!("P-Mode {}: {partner} has no enc_cert", link.id))?;
        let pem = openssl::x509::X509::from_der(enc).and_then(|c| c.to_pem()).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(work).map_err(|e| e.to_string())?;
        let recipient = work.join(format!("{partner}-enc.pem"));
        std::fs::write(&recipient, pem).map_err(|e| e.to_string())?;
        Ok(Remote { url: url.to_owned(), config, link, leg, recipient, client: As4Client::default() })
    }

    /// The link's profile as the case files name it.
    pub fn profile(&self) -> &'static str {
        self.link.profile.as_str()
    }

    /// `mutation` of a valid ePhyto user message on the link.
    pub fn message(&self, mutation: &str) -> Result<Injected, String> {
        let me = self.link.party(&self.config.party_id).ok_or("we are not in the link")?;
        let partner = self.link.partner_of(&self.config.party_id).ok_or("no partner")?;
        let leg = &self.link.legs[self.leg];
        let id = format!("conformance-{}@{}", uuid::Uuid::new_v4().simple(), self.config.host);
        let mut um = user_message(&id);
        let party = |p: &crate::pmode::model::Party, role: &str| EbParty {
            ids: vec![PartyId { value: p.id.clone(), kind: p.kind.clone() }],
            role: role.to_owned(),
        };
        um.info.timestamp = ventanilla::clock::timestamp_now();
        um.from = party(me, crate::ebms::ns::ROLE_INITIATOR);
        um.to = party(partner, crate::ebms::ns::ROLE_RESPONDER);
        um.agreement = self.link.agreement.as_ref().map(|value| AgreementRef {
            value: value.clone(),
            kind: self.link.agreement_type.clone(),
            pmode: None,
        });
        um.service = Service { value: leg.service.clone(), kind: leg.service_type.clone() };
        um.action = leg.action.clone();
        let country = |p: &crate::pmode::model::Party| p.country.clone().unwrap_or_else(|| "XX".into());
        let security = crate::msh::security::SecurityContext::load(&self.config)?;
        let keys = security
            .for_profile(self.link.profile)
            .ok_or_else(|| format!("no [[keys]] for profile {}", self.profile()))?;
        let origin = Origin {
            um,
            document: super::inject::ephyto(&country(me), &country(partner)),
            signer: keys.sign.clone(),
            recipient: self.recipient.clone(),
            receiver: "remote",
            demo: None,
        };
        protected_from(mutation, origin).map_err(|e| e.to_string())
    }

    /// POSTs a message to the partner, with our TLS identity for the link.
    pub async fn post(&self, message: Injected) -> Result<(u16, String), String> {
        let identity = TlsIdentity {
            trust: self.config.as4.trust.clone(),
            client_cert: self
                .link
                .tls_client_auth
                .then(|| (self.config.as4.tls_cert.clone(), self.config.as4.tls_key.clone())),
        };
        let stream: BodyStream = Box::pin(futures_util::stream::iter([Ok(bytes::Bytes::from(message.body))]));
        let response = self
            .client
            .post(&identity, &self.url, &message.content_type, stream, Duration::from_secs(60))
            .await
            .map_err(|e| format!("POST {}: {e}", self.url))?;
        Ok((response.status, String::from_utf8_lossy(&response.body).into_owned()))
    }
}
