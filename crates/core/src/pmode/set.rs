//! The loaded P-Modes of one access point: cross-file checks and matching of incoming
//! messages to exactly one leg (docs/as4.md §6.2).

use super::load::PmodeError;
use super::model::*;
use crate::ebms::{EbmsCode, EbmsError, UserMessage, ns};
use std::sync::Arc;

#[derive(Debug, Clone, Default)]
pub struct PmodeSet {
    links: Vec<Arc<Link>>,
}

/// The result of matching: the link and the leg (None for the AS4 test service).
#[derive(Debug, Clone)]
pub struct Matched {
    pub link: Arc<Link>,
    pub leg: Option<usize>,
}

impl Matched {
    pub fn leg(&self) -> Option<&Leg> {
        self.leg.map(|i| &self.link.legs[i])
    }
}

impl PmodeSet {
    /// Checks what single files cannot: unique ids, and no two links that would match the
    /// same incoming header (same parties, agreement, service and action).
    pub fn build(links: Vec<Link>) -> Result<PmodeSet, Vec<PmodeError>> {
        let mut errors = Vec::new();
        for (i, a) in links.iter().enumerate() {
            for b in &links[..i] {
                let err =
                    |key: &str, message: String| PmodeError { file: a.file.clone(), line: 1, key: key.into(), message };
                if a.id == b.id {
                    errors.push(err("id", format!("id '{}' is also used by {}", a.id, b.file.display())));
                }
                let same_pair = a.parties.iter().all(|p| b.party(&p.id).is_some());
                if same_pair && a.agreement == b.agreement {
                    for leg in &a.legs {
                        if b.legs.iter().any(|o| o.service == leg.service && o.action == leg.action) {
                            errors.push(err(
                                "leg",
                                format!(
                                    "service '{}' action '{}' between these parties is also a leg of {}",
                                    leg.service,
                                    leg.action,
                                    b.file.display()
                                ),
                            ));
                        }
                    }
                }
            }
        }
        if errors.is_empty() { Ok(PmodeSet { links: links.into_iter().map(Arc::new).collect() }) } else { Err(errors) }
    }

    pub fn links(&self) -> &[Arc<Link>] {
        &self.links
    }

    /// The links in which `me` takes part.
    pub fn links_of<'a>(&'a self, me: &'a str) -> impl Iterator<Item = &'a Arc<Link>> + 'a {
        self.links.iter().filter(move |l| l.party(me).is_some())
    }

    /// The link and leg to send `leg_name` to `partner` on.
    pub fn outbound(&self, me: &str, partner: &str, leg_name: &str) -> Result<(Arc<Link>, usize), String> {
        let link = self
            .links_of(me)
            .find(|l| l.party(partner).is_some() && l.partner_of(me).is_some_and(|p| p.id == partner))
            .ok_or_else(|| format!("no P-Mode links {me} with partner '{partner}'"))?;
        let index = link
            .legs
            .iter()
            .position(|l| l.name == leg_name || l.action == leg_name)
            .ok_or_else(|| format!("P-Mode {} ({}) has no leg '{leg_name}'", link.id, link.file.display()))?;
        if !link.legs[index].may_send(me) {
            return Err(format!(
                "P-Mode {} leg '{leg_name}' may only be sent by {}",
                link.id,
                link.legs[index].from.as_deref().unwrap_or("?")
            ));
        }
        Ok((link.clone(), index))
    }

    /// The IOP leg a legacy request from `remitente` to `destinatario` (IOP party ids) arrives
    /// on, where `me` is `destinatario`.
    pub fn match_iop(&self, me: &str, remitente: &str, destinatario: &str) -> Result<(Arc<Link>, usize), String> {
        let mut known = false;
        for link in self.links_of(me) {
            let (Some(me_party), Some(partner)) = (link.party(me), link.partner_of(me)) else { continue };
            let (Some(ours), Some(theirs)) = (&me_party.iop, &partner.iop) else { continue };
            if theirs.id != remitente {
                continue;
            }
            known = true;
            if ours.id != destinatario {
                continue;
            }
            if let Some(i) = link.legs.iter().position(|l| l.transport == Transport::Iop && l.may_send(&partner.id)) {
                return Ok((link.clone(), i));
            }
        }
        Err(if known {
            format!("IDdeDestinatario '{destinatario}' is not this access point on the IOP links with '{remitente}'")
        } else {
            format!("IDdeRemitente '{remitente}' is not a partner on any IOP link of this access point")
        })
    }

    /// Matches an incoming user message addressed to `me` to exactly one leg.
    pub fn match_incoming(&self, me: &str, um: &UserMessage) -> Result<Matched, EbmsError> {
        let id = Some(um.info.message_id.as_str());
        let fail = |code, detail: String| Err(EbmsError::new(code, detail).with_ref(id));
        let to_us = um.to.ids.iter().find(|p| p.value == me);
        if to_us.is_none() {
            let to: Vec<&str> = um.to.ids.iter().map(|p| p.value.as_str()).collect();
            return fail(EbmsCode::ValueNotRecognized, format!("eb:To party {to:?} is not this access point ({me})"));
        }
        let mine: Vec<&Arc<Link>> = self.links_of(me).collect();
        let with_sender: Vec<&Arc<Link>> = mine
            .iter()
            .copied()
            .filter(|l| um.from.ids.iter().any(|p| l.partner_of(me).is_some_and(|partner| partner.id == p.value)))
            .collect();
        if with_sender.is_empty() {
            let from: Vec<&str> = um.from.ids.iter().map(|p| p.value.as_str()).collect();
            return fail(
                EbmsCode::ValueNotRecognized,
                format!("eb:From party {from:?} is not a partner of {me} in any P-Mode"),
            );
        }
        let is_test = um.service.value == ns::TEST_SERVICE && um.action == ns::TEST_ACTION;
        if !is_test {
            if !mine.iter().any(|l| l.legs.iter().any(|leg| leg.service == um.service.value)) {
                return fail(
                    EbmsCode::ValueNotRecognized,
                    format!("eb:Service '{}' is not in any P-Mode", um.service.value),
                );
            }
            if !mine.iter().any(|l| l.legs.iter().any(|leg| leg.service == um.service.value && leg.action == um.action))
            {
                return fail(
                    EbmsCode::ValueNotRecognized,
                    format!("eb:Action '{}' is not a leg of service '{}' in any P-Mode", um.action, um.service.value),
                );
            }
        }
        // Among the links with this sender, find what matches and say precisely what does not.
        let mut matches = Vec::new();
        let mut reasons = Vec::new();
        for link in with_sender {
            let partner = link.partner_of(me).map(|p| p.id.as_str()).unwrap_or_default();
            // The detail goes to the partner: the link id, never a local path.
            let mismatch = |what: String| format!("P-Mode {}: {what}", link.id);
            if let Some(reason) = party_mismatch(link, me, partner, um) {
                reasons.push(mismatch(reason));
                continue;
            }
            if let Some(reason) = agreement_mismatch(link, um) {
                reasons.push(mismatch(reason));
                continue;
            }
            if is_test {
                matches.push(Matched { link: link.clone(), leg: None });
                continue;
            }
            for (i, leg) in link.legs.iter().enumerate() {
                if leg.service != um.service.value || leg.action != um.action {
                    continue;
                }
                if leg.service_type != um.service.kind {
                    reasons.push(mismatch(format!(
                        "leg '{}' expects service type {:?}, got {:?}",
                        leg.name, leg.service_type, um.service.kind
                    )));
                } else if leg.mpc.as_deref().unwrap_or(ns::DEFAULT_MPC) != um.mpc.as_deref().unwrap_or(ns::DEFAULT_MPC)
                {
                    reasons.push(mismatch(format!("leg '{}' uses another MPC than {:?}", leg.name, um.mpc)));
                } else if !leg.may_send(partner) {
                    reasons.push(mismatch(format!("leg '{}' may not be sent by {partner}", leg.name)));
                } else if leg.transport != Transport::As4 {
                    reasons.push(mismatch(format!("leg '{}' travels over the IOP, not AS4", leg.name)));
                } else {
                    matches.push(Matched { link: link.clone(), leg: Some(i) });
                }
            }
        }
        match matches.len() {
            1 => Ok(matches.remove(0)),
            0 => fail(EbmsCode::ProcessingModeMismatch, format!("no P-Mode leg matches: {}", reasons.join("; "))),
            n => fail(
                EbmsCode::ProcessingModeMismatch,
                format!(
                    "{n} P-Mode legs match: {}",
                    matches.iter().map(|m| m.link.id.as_str()).collect::<Vec<_>>().join(", ")
                ),
            ),
        }
    }
}

fn party_mismatch(link: &Link, me: &str, partner: &str, um: &UserMessage) -> Option<String> {
    let expect =
        |party: &Party, ids: &[crate::ebms::PartyId]| ids.iter().any(|p| p.value == party.id && p.kind == party.kind);
    let me_party = link.party(me)?;
    let partner_party = link.party(partner)?;
    if !expect(me_party, &um.to.ids) {
        return Some(format!("eb:To party type differs from the P-Mode's {:?}", me_party.kind));
    }
    if !expect(partner_party, &um.from.ids) {
        return Some(format!("eb:From party type differs from the P-Mode's {:?}", partner_party.kind));
    }
    if um.from.role != ns::ROLE_INITIATOR || um.to.role != ns::ROLE_RESPONDER {
        return Some(format!("roles {} -> {} are not the AS4 initiator -> responder", um.from.role, um.to.role));
    }
    None
}

fn agreement_mismatch(link: &Link, um: &UserMessage) -> Option<String> {
    let theirs = um.agreement.as_ref();
    if let Some(pmode) = theirs.and_then(|a| a.pmode.as_deref())
        && pmode != link.id
    {
        return Some(format!("AgreementRef/@pmode '{pmode}' is not this P-Mode"));
    }
    match (&link.agreement, theirs) {
        (None, None) => None,
        (Some(ours), Some(a)) if *ours == a.value && link.agreement_type == a.kind => None,
        (ours, a) => Some(format!("agreement {:?} expected, got {:?}", ours, a.map(|a| &a.value))),
    }
}

#[cfg(test)]
mod tests {
    use super::super::load::{parse_link, tests::GOOD};
    use super::*;
    use crate::ebms::{AgreementRef, MessageInfo, Party as EbParty, PartyId, Service};
    use std::path::Path;

    fn set() -> PmodeSet {
        PmodeSet::build(vec![parse_link(Path::new("cl-pe.toml"), GOOD).unwrap()]).unwrap()
    }

    fn message() -> UserMessage {
        let kind = Some("urn:oasis:names:tc:ebcore:partyid-type:unregistered:pacific-alliance".to_owned());
        UserMessage {
            info: MessageInfo {
                timestamp: "2026-01-01T00:00:00Z".into(),
                message_id: "m@x".into(),
                ref_to_message_id: None,
            },
            from: EbParty {
                ids: vec![PartyId { value: "CL-SAG".into(), kind: kind.clone() }],
                role: ns::ROLE_INITIATOR.into(),
            },
            to: EbParty { ids: vec![PartyId { value: "PE-SENASA".into(), kind }], role: ns::ROLE_RESPONDER.into() },
            agreement: Some(AgreementRef {
                value: "urn:pacific-alliance:as4:agreement:cl-pe".into(),
                kind: None,
                pmode: None,
            }),
            service: Service { value: "urn:pacific-alliance:service:ephyto".into(), kind: None },
            action: "SPSCertificate".into(),
            conversation_id: "c".into(),
            ..Default::default()
        }
    }

    #[test]
    fn matches_exactly_one_leg() {
        let m = set().match_incoming("PE-SENASA", &message()).unwrap();
        assert_eq!(m.leg().unwrap().name, "ephyto");
    }

    #[test]
    fn unknown_values_and_mismatches() {
        let s = set();
        let mut um = message();
        um.action = "Nope".into();
        assert_eq!(s.match_incoming("PE-SENASA", &um).unwrap_err().code, EbmsCode::ValueNotRecognized);
        let mut um = message();
        um.from.ids[0].value = "MX-SENASICA".into();
        assert_eq!(s.match_incoming("PE-SENASA", &um).unwrap_err().code, EbmsCode::ValueNotRecognized);
        assert_eq!(s.match_incoming("CO-ICA", &message()).unwrap_err().code, EbmsCode::ValueNotRecognized);
        let mut um = message();
        um.agreement = None;
        let err = s.match_incoming("PE-SENASA", &um).unwrap_err();
        assert_eq!(err.code, EbmsCode::ProcessingModeMismatch);
        assert!(err.detail.contains("agreement"), "{}", err.detail);
        assert_eq!(err.ref_to_message_id.as_deref(), Some("m@x"));
        // Issue 10.8: the detail sent to the partner names the link, not a file of ours.
        let s = PmodeSet::build(vec![parse_link(Path::new("../pmodes/cl-pe.toml"), GOOD).unwrap()]).unwrap();
        let err = s.match_incoming("PE-SENASA", &um).unwrap_err();
        assert!(err.detail.contains("P-Mode cl-pe:") && !err.detail.contains(".toml"), "{}", err.detail);
    }

    #[test]
    fn overlapping_files_are_refused() {
        let a = parse_link(Path::new("a.toml"), GOOD).unwrap();
        let b = parse_link(Path::new("b.toml"), &GOOD.replace("id = \"cl-pe\"", "id = \"cl-pe-2\"")).unwrap();
        let errs = PmodeSet::build(vec![a, b]).unwrap_err();
        assert!(errs.iter().any(|e| e.key == "leg" && e.to_string().contains("a.toml")));
    }
}
